"""A user's app of the tests: campaigns that send through assigned accounts."""
