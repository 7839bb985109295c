"""Reading a policy YAML file, with errors that name the file."""

from pathlib import Path
from typing import Any

import yaml


def read_policy(path: Path, what: str, error: type[ValueError]) -> Any:
    """The parsed YAML at `path`; `error` (naming `what` and the file) if unreadable or invalid."""
    try:
        return yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
