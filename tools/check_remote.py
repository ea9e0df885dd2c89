"""Check that a DVC remote answers with the credentials at hand, and name it when it does not.

    python tools/check_remote.py [-r REMOTE]

`dvc push` reports refused credentials as "unexpected error - Forbidden" without saying which
remote or where it points; this says both, and where credentials are read from.
"""

import argparse
import sys

from dvc.repo import Repo


def check(remote_name=None):
    """Returns (ok, message)."""
    repo = Repo()
    name = remote_name or repo.config["core"].get("remote")
    if not name:
        return False, "no default DVC remote: dvc remote default <name>"
    config = repo.config["remote"].get(name)
    if config is None:
        return False, f"no DVC remote named '{name}' (dvc remote list)"
    where = config["url"] + (f" at {config['endpointurl']}" if config.get("endpointurl") else "")
    try:
        remote = repo.cloud.get_remote(name)
        remote.fs.exists(remote.path)
    except Exception as e:  # noqa: BLE001 - whatever the backend raises, report it against the remote
        hint = (
            " (credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or .dvc/config.local)"
            if config["url"].startswith("s3://")
            else ""
        )
        return False, f"remote '{name}' ({where}) cannot be used: {type(e).__name__}: {e}{hint}"
    return True, f"remote '{name}' ({where}) answers"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-r", "--remote", help="remote name (default: the default remote)")
    ok, message = check(parser.parse_args().remote)
    print(message if ok else f"error: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
