"""mailpool never needs Django, and the app's migrations match its models."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from django.core.management import call_command

BLOCK_DJANGO = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoDjango(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "django" or name.startswith("django."):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoDjango())
    import mailpool, mailpool.contrib
    from mailpool import AccountPool, InMemoryStorage, open_storage
    AccountPool(open_storage("memory://"))
    assert not any(m == "django" or m.startswith("django.") for m in sys.modules)
    try:
        import mailpool.contrib.django.storage
    except ModuleNotFoundError as exc:
        assert "django" in str(exc)
    else:
        raise AssertionError("the Django storage imported without Django")
    print("ok")
    """
)


def test_mailpool_imports_without_django() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_DJANGO],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.django_db
def test_the_migrations_match_the_models() -> None:
    call_command("makemigrations", "mailpool", "--check", "--dry-run", verbosity=0)
