"""mailpool for Django: accounts in the project's database, an admin, a
pool-backed email backend, management commands and an endpoint.

.. code-block:: python

    INSTALLED_APPS = [..., "mailpool.contrib.django"]
    EMAIL_BACKEND = "mailpool.contrib.django.backend.EmailBackend"

Modules (import them once Django is set up):

- :mod:`~mailpool.contrib.django.models`: ``EmailAccount``;
- :mod:`~mailpool.contrib.django.storage`: ``DjangoStorage``;
- :mod:`~mailpool.contrib.django.backend`: ``EmailBackend``;
- :mod:`~mailpool.contrib.django.urls`: the connection-test endpoint;
- commands ``test_email_accounts`` and ``reset_daily_email_counts``.

Needs the ``django`` extra: ``pip install 'mailpool[django]'``.
"""
