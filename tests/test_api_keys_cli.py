"""``mailer api-keys create|list|revoke`` through the in-process CLI runner, on SQLite and
PostgreSQL: the key printed once (and only its hash stored), scopes from ``--scopes a,b``,
repeated ``--scope`` or ``all``, a bad scope refused naming the valid ones, the listing
without the key, revocation taking effect at the API's next request, and the audit lines
(``cli:<user>``, never the key).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailer.models import Scope
from mailer.storage import Store
from mailer.storage.api_keys import key_hash
from tests.api_support import Api, api_fixture  # noqa: F401
from tests.cli_support import amailer

pytestmark = pytest.mark.timeout(60)


def env_for(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "MAILER_DATABASE__URL": database_url,
        "MAILER_PATHS__DATA_DIR": str(tmp_path / "data"),
        "MAILER_LOG__LEVEL": "WARNING",
    }


async def test_create_list_revoke(
    api: Api, store: Store, tmp_path: Path, database_url: str
) -> None:
    env = env_for(tmp_path, database_url)
    made = await amailer(tmp_path, "api-keys", "create", "--name", "crm",
                         "--scopes", "lists:read,subscribers:read", "--scope", "subscribers:write",
                         env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    raw = made.stdout.strip()
    assert raw.startswith("mlr_")
    assert len(raw) == 47
    assert "not be shown again" in made.stderr
    (key,) = await store.api_keys.all()
    assert key.scopes == {Scope.LISTS_READ, Scope.SUBSCRIBERS_READ, Scope.SUBSCRIBERS_WRITE}
    client = api.client_for(raw)
    assert (await client.get("/api/v1/lists")).status_code == 200

    listed = await amailer(tmp_path, "api-keys", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "crm" in listed.stdout
    assert raw[:12] in listed.stdout
    assert raw not in listed.stdout
    assert "subscribers:write" in listed.stdout

    twice = await amailer(tmp_path, "api-keys", "create", "--name", "crm", "--scopes", "all",
                          env=env)  # fmt: skip
    assert twice.returncode != 0
    assert "already exists" in twice.stderr

    gone = await amailer(tmp_path, "api-keys", "revoke", "crm", env=env)
    assert gone.returncode == 0, gone.stderr
    assert (await client.get("/api/v1/lists")).status_code == 401
    missing = await amailer(tmp_path, "api-keys", "revoke", "nobody", env=env)
    assert missing.returncode != 0
    assert "nobody" in missing.stderr

    lines = await store.audit.page()
    assert sorted(x.action for x in lines) == ["api_key.create", "api_key.revoke"]
    assert all(x.actor.startswith("cli:") for x in lines)
    assert raw not in str(lines)
    assert key_hash(raw) not in str(lines)


async def test_scopes_all_and_bad_scope(store: Store, tmp_path: Path, database_url: str) -> None:
    env = env_for(tmp_path, database_url)
    made = await amailer(tmp_path, "api-keys", "create", "--name", "ops", "--scopes", "all",
                         env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    (key,) = await store.api_keys.all()
    assert key.scopes == set(Scope)
    bad = await amailer(tmp_path, "api-keys", "create", "--name", "x", "--scopes",
                        "lists:read,lists:write", env=env)  # fmt: skip
    assert bad.returncode != 0
    assert "'lists:write' is not a scope" in bad.stderr
    assert "webhooks:manage" in bad.stderr  # the valid ones are listed
    assert "Traceback" not in bad.stderr
    none = await amailer(tmp_path, "api-keys", "create", "--name", "y", env=env)
    assert none.returncode != 0
    assert "--scopes" in none.stderr
    odd = await amailer(tmp_path, "api-keys", "create", "--name", "a b", "--scopes", "all",
                        env=env)  # fmt: skip
    assert odd.returncode != 0
    assert "--name" in odd.stderr
    assert len(await store.api_keys.all()) == 1
