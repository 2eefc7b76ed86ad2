"""The official OpenAI Node SDK (`openai` from npm, pinned in tests/node/package.json) against a live server.

tests/node/smoke.mjs generates (b64_json and url), edits, varies, lists and retrieves models, and checks that errors
arrive as the SDK's typed errors. Needs Node.js 20+ and npm; `npm ci` runs once (node_modules/ is not committed).
"""
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from accounts import services as account_services

NODE_DIR = Path(__file__).resolve().parent / "node"
MIN_NODE_MAJOR = 20


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"`{tool}` was not found on PATH. The Node SDK smoke test needs Node.js {MIN_NODE_MAJOR}+ and npm "
                    "(https://nodejs.org/); install them and run the suite again.", pytrace=False)
    return path


@pytest.fixture(scope="session")
def node_sdk() -> str:
    """The node binary, with tests/node's pinned dependencies installed (`npm ci` if node_modules is missing)."""
    node, npm = _require("node"), _require("npm")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major = int(re.match(r"v(\d+)", version).group(1))
    if major < MIN_NODE_MAJOR:
        pytest.fail(f"Node.js {version} is too old for the Node SDK smoke test: {MIN_NODE_MAJOR}+ is needed.",
                    pytrace=False)
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").exists():
        installed = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True,
                                   text=True, timeout=600)
        if installed.returncode != 0:
            pytest.fail(f"`npm ci` in {NODE_DIR} failed (exit {installed.returncode}):\n{installed.stdout}\n"
                        f"{installed.stderr}", pytrace=False)
    return node


def test_official_node_sdk_against_the_live_server(node_sdk, live_url, organization):
    _, raw_key = account_services.create_api_key(organization=organization, name="node sdk smoke")
    env = {**os.environ, "IMAGEGATE_BASE_URL": f"{live_url}/v1", "IMAGEGATE_API_KEY": raw_key}
    result = subprocess.run([node_sdk, "smoke.mjs"], cwd=NODE_DIR, env=env, capture_output=True, text=True,
                            timeout=300)
    print(result.stdout)
    assert result.returncode == 0, f"smoke.mjs failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    assert "all checks passed" in result.stdout
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]["openai"]
    installed = json.loads((NODE_DIR / "node_modules" / "openai" / "package.json").read_text())["version"]
    assert installed == pinned, (f"node_modules has openai {installed}, package.json pins {pinned}: "
                                 "rm -rf tests/node/node_modules")
