"""Shared harnesses for the offline HTML pages: run a page's script under node, or load it in Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from crystalflow.apps.viz import STATUS_ID

CHROMIUM = "/usr/bin/chromium"
BROWSER_TIMEOUT_S = 90

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")

#: loads the page's first <script> (the inlined 3Dmol.js) as `real`, then leaves `scripts[1]` (the page's
#: own script) for the body to run against stubs of the DOM and of $3Dmol
_NODE_PRELUDE = r"""
const fs = require('fs');
const html = fs.readFileSync(process.argv[2], 'utf8');
const scripts = [...html.matchAll(/<script>([\s\S]*?)<\/script>/g)].map(m => m[1]);
global.window = global;
global.navigator = {userAgent: 'node'};
global.document = {createElement: () => ({getContext: () => null, style: {}}), addEventListener() {},
                   querySelectorAll: () => [], readyState: 'complete'};
fs.writeFileSync(process.argv[3], scripts[0]);
const real = require(process.argv[3]);
"""


def run_page_in_node(page: Path, body_js: str, tmp_path: Path) -> dict:
    """Run ``body_js`` (after the prelude) on ``page`` under node; return the JSON it prints last."""
    harness = tmp_path / "harness.js"
    harness.write_text(_NODE_PRELUDE + body_js)
    proc = subprocess.run(["node", str(harness), str(page), str(tmp_path / "3dmol.js")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def chromium_status(page: Path, tmp_path: Path) -> str:
    """The text of the page's status element after loading it in headless Chromium (skips without WebGL)."""
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
        "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader", "--use-angle=swiftshader",
        "--virtual-time-budget=10000", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    match = re.search(rf'id="{STATUS_ID}"[^>]*>([^<]*)<', proc.stdout)
    assert match, f"no status element in the DOM dump; stderr: {proc.stderr[-2000:]}"
    if match.group(1) == "no-webgl":
        pytest.skip("this headless chromium has no WebGL")
    return match.group(1)
