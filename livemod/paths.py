"""Where the repository's shipped files live (the project installs editable)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS_DIR = REPO_ROOT / "configs"
MODELS_MANIFEST = REPO_ROOT / "models" / "manifest.yaml"
DEFAULT_POLICY = CONFIGS_DIR / "policy.yaml"
