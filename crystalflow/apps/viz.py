"""Pictures of clusters: the CrystalFlow Figure 1 strip (PNG) and an offline 3D viewer (HTML).

- :func:`trajectory_strip`: x_w → intermediate → prediction → truth, four matplotlib 3D panels with
  the same view and axis limits; atoms in CPK-like colours (optionally tinted per molecule), bonds
  as lines within molecules.
- :func:`viewer_html`: a self-contained HTML page with two linked 3Dmol.js viewers (prediction,
  truth). 3Dmol.js (BSD-3-Clause, vendored in ``crystalflow/resources/js``) is inlined, so the page
  needs no network.
- :func:`cluster_to_xyz`, :func:`cluster_to_pdb`: text formats of a cluster ``[M, n, 3]``.

Clusters are ``[M, n, 3]`` arrays (M molecules of n atoms, same atom order, molecule 0 central) with
atomic numbers ``z`` ``[n]``; ``[K, M, n, 3]`` arrays are shown by their first sample.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import numpy as np

from crystalflow.common.io import atomic_open, write_text
from crystalflow.common.resources import resource_path
from crystalflow.structure.elements import COVALENT_RADIUS, symbol
from crystalflow.structure.geometry import kabsch
from crystalflow.structure.molecules import molecule_bonds

#: CPK-like colours by element symbol (Jmol palette, hydrogens light grey so they show on white)
CPK_COLORS: dict[str, str] = {
    "H": "#e8e8e8", "B": "#ffb5b5", "C": "#606060", "N": "#3050f8", "O": "#ff0d0d", "F": "#90e050",
    "Si": "#f0c8a0", "P": "#ff8000", "S": "#e6c628", "Cl": "#1ff01f", "Br": "#a62929", "I": "#940094",
    "Se": "#ffa100", "Na": "#ab5cf2", "K": "#8f40d4", "Fe": "#e06633", "Cu": "#c88033", "Zn": "#7d80b0",
}
#: colour of elements missing from :data:`CPK_COLORS`
DEFAULT_COLOR = "#ff1493"
#: weight of the molecule colour when atoms are tinted per molecule (0: pure CPK, 1: pure molecule colour)
TINT_WEIGHT = 0.35
#: marker area (pt²) per Å² of covalent radius in the strip
MARKER_AREA_PER_A2 = 60.0
#: figure size (inches) of one strip panel
PANEL_INCHES = 4.0
#: matplotlib 3D box zoom: fills the panel (the axes are hidden, so no room is needed for labels)
PANEL_ZOOM = 1.35
#: height of the panel titles (axes fraction)
TITLE_Y = 0.95
#: extra figure height (inches) for a title
TITLE_INCHES = 0.4
#: resolution of the PNG strip
STRIP_DPI = 110
#: matplotlib 3D view (degrees) shared by all panels
VIEW_ELEV, VIEW_AZIM = 20.0, -60.0
#: extra room (fraction of the half-range) around the clusters in the strip's axis limits
LIMIT_PADDING = 0.05
#: bond line width (pt) in the strip
BOND_WIDTH = 1.0
#: atoms per cluster above which atoms are drawn without edges (faster, less clutter)
EDGE_ATOM_LIMIT = 2000
#: PDB format limits: atom serial numbers and residue numbers
PDB_MAX_SERIAL, PDB_MAX_RESSEQ = 99999, 9999
#: id of the element whose text the HTML viewer sets to 'ok', 'no-webgl' or 'error: ...'
STATUS_ID = "cf-status"
#: 3Dmol.js styles of the viewer (stick radius, sphere scale in Å-ish units)
STICK_RADIUS, SPHERE_SCALE = 0.12, 0.22
#: 3Dmol.js carbon colour schemes of the two viewers (prediction, truth) and of the central molecule
VIEWER_SCHEMES = ("greenCarbon", "cyanCarbon")
CENTRAL_SCHEME = "orangeCarbon"
VENDORED_3DMOL = ("js", "3Dmol-min.js")
VENDORED_3DMOL_LICENCE = ("js", "LICENSE-3Dmol.txt")
#: version of the vendored 3Dmol.js (npm package ``3dmol``; see LICENSE-3Dmol.txt)
VENDORED_3DMOL_VERSION = "2.5.5"


def _first_sample(x: np.ndarray, name: str) -> np.ndarray:
    """A cluster ``[M, n, 3]`` from ``[M, n, 3]`` or ``[K, M, n, 3]`` (first sample), as float64."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 4:
        a = a[0]
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"{name} must have shape [M, n, 3] or [K, M, n, 3], got {np.shape(x)}")
    return a


def _check_z(z: np.ndarray, n_atoms: int) -> np.ndarray:
    zz = np.asarray(z).astype(np.int64).reshape(-1)
    if zz.shape[0] != n_atoms:
        raise ValueError(f"z has {zz.shape[0]} entries but molecules have {n_atoms} atoms")
    return zz


# ----------------------------------------------------------------------------------- text formats
def cluster_to_xyz(x: np.ndarray, z: np.ndarray, comment: str = "") -> str:
    """XYZ text of a cluster ``[M, n, 3]``: all atoms molecule after molecule (comment on line 2)."""
    c = _first_sample(x, "x")
    zz = _check_z(z, c.shape[1])
    syms = [symbol(int(v)) for v in zz] * c.shape[0]
    lines = [str(len(syms)), comment.replace("\n", " ")]
    lines += [f"{s:<2s} {p[0]:12.6f} {p[1]:12.6f} {p[2]:12.6f}" for s, p in zip(syms, c.reshape(-1, 3))]
    return "\n".join(lines) + "\n"


def cluster_to_pdb(x: np.ndarray, z: np.ndarray, chain: str = "A", resname: str = "MOL",
                   bonds: np.ndarray | None = None, title: str | None = None) -> str:
    """PDB text of a cluster ``[M, n, 3]``: HETATM records, one residue per molecule (1..M) in ``chain``.

    Atom names are element + index within the molecule (C1, H12, ...). CONECT records list the
    intramolecular ``bonds`` ``[B, 2]`` (default: :func:`molecule_bonds` of molecule 0), the same for
    every molecule, so viewers never bond atoms of different molecules.
    """
    c = _first_sample(x, "x")
    m, n, _ = c.shape
    zz = _check_z(z, n)
    if m * n > PDB_MAX_SERIAL or m > PDB_MAX_RESSEQ:
        raise ValueError(f"a cluster of {m} x {n} atoms exceeds the PDB format's limits")
    if len(chain) != 1:
        raise ValueError(f"chain must be one character, got {chain!r}")
    b = molecule_bonds(c[0], zz) if bonds is None else np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    names = []
    for i, v in enumerate(zz):
        name = f"{symbol(int(v))}{i + 1}"
        names.append(name if len(name) >= 4 or len(symbol(int(v))) == 2 else f" {name}")
    lines = [f"TITLE     {title[:70]}"] if title else []
    lines.append("REMARK   1 written by crystalflow: one residue per molecule, residue 1 is the central one")
    for mol in range(m):
        for i in range(n):
            serial = mol * n + i + 1
            p = c[mol, i]
            sym = symbol(int(zz[i]))
            lines.append(
                f"HETATM{serial:5d} {names[i]:<4s} {resname[:3]:>3s} {chain}{mol + 1:4d}    "
                f"{p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}{1.0:6.2f}{0.0:6.2f}          {sym.upper():>2s}"
            )
    lines.append(f"TER   {m * n + 1:5d}      {resname[:3]:>3s} {chain}{m:4d}")
    partners: dict[int, list[int]] = {}
    for i, j in b.tolist():
        partners.setdefault(i, []).append(j)
        partners.setdefault(j, []).append(i)
    for mol in range(m):
        for i in sorted(partners):
            others = sorted(partners[i])
            for start in range(0, len(others), 4):  # at most four partners per CONECT record
                chunk = "".join(f"{mol * n + j + 1:5d}" for j in others[start : start + 4])
                lines.append(f"CONECT{mol * n + i + 1:5d}{chunk}")
    lines.append("END")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ PNG strip
def _hex_to_rgb(color: str) -> np.ndarray:
    return np.array([int(color[k : k + 2], 16) for k in (1, 3, 5)], dtype=np.float64) / 255.0


def _atom_colors(z: np.ndarray, m: int, tint: bool) -> np.ndarray:
    """RGB ``[M, n, 3]`` atom colours: CPK, blended with a per-molecule colour when ``tint``."""
    import matplotlib

    base = np.array([_hex_to_rgb(CPK_COLORS.get(symbol(int(v)), DEFAULT_COLOR)) for v in z])
    colors = np.broadcast_to(base, (m, len(z), 3)).copy()
    if tint:
        cmap = matplotlib.colormaps["tab20"]
        mol_rgb = np.array([cmap(k % cmap.N)[:3] for k in range(m)])
        colors = (1 - TINT_WEIGHT) * colors + TINT_WEIGHT * mol_rgb[:, None, :]
    return colors


def _draw_cluster(ax, x: np.ndarray, z: np.ndarray, bonds: np.ndarray, tint: bool) -> None:  # noqa: ANN001
    """Scatter the atoms and draw the intramolecular bonds of one cluster on a 3D axis."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection

    m, n, _ = x.shape
    colors = _atom_colors(z, m, tint)
    sizes = np.tile(MARKER_AREA_PER_A2 * COVALENT_RADIUS[z] ** 2, m)
    if len(bonds):
        segments = x[:, bonds].reshape(-1, 2, 3)
        bond_colors = colors[:, bonds].mean(axis=2).reshape(-1, 3) * 0.8
        ax.add_collection3d(Line3DCollection(segments, colors=bond_colors, linewidths=BOND_WIDTH))
    edge = "black" if m * n <= EDGE_ATOM_LIMIT else "none"
    ax.scatter(*x.reshape(-1, 3).T, c=colors.reshape(-1, 3), s=sizes, edgecolors=edge, linewidths=0.2,
               depthshade=True, alpha=1.0)


def _limits(clusters: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Common cubic axis box (centre, half-range) holding all clusters."""
    pts = np.concatenate([c.reshape(-1, 3) for c in clusters])
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    half = float((hi - lo).max() / 2) * (1 + LIMIT_PADDING) or 1.0
    return centre, half


def trajectory_strip(x_w: np.ndarray, traj_mid: np.ndarray, pred: np.ndarray, truth: np.ndarray, z: np.ndarray,
                     path_png: str, title: str | None = None, mid_label: str = "intermediate",
                     tint_molecules: bool = True) -> str:
    """Write the CrystalFlow Figure-1 strip x_w → intermediate → prediction → truth as a PNG; return its path.

    All panels share the view (elevation/azimuth) and the axis limits, so motion between panels is
    real motion. ``mid_label`` names the second panel (e.g. ``"t = 0.5"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    named = ((x_w, "x_w"), (traj_mid, "traj_mid"), (pred, "pred"), (truth, "truth"))
    clusters = [_first_sample(a, name) for a, name in named]
    shape = clusters[-1].shape
    for c in clusters:
        if c.shape != shape:
            raise ValueError(f"all clusters must have the shape of truth {shape}, got {c.shape}")
    zz = _check_z(z, shape[1])
    bonds = molecule_bonds(clusters[-1][0], zz)
    centre, half = _limits(clusters)
    labels = ("input $x_w$", mid_label, "prediction", "truth $x_s$")
    fig = Figure(figsize=(PANEL_INCHES * len(clusters), PANEL_INCHES + (TITLE_INCHES if title else 0.0)))
    FigureCanvasAgg(fig)  # render with Agg whatever pyplot's backend is
    for k, (c, label) in enumerate(zip(clusters, labels)):
        ax = fig.add_subplot(1, len(clusters), k + 1, projection="3d")
        _draw_cluster(ax, c, zz, bonds, tint_molecules)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_zlim(centre[2] - half, centre[2] + half)
        ax.set_box_aspect((1, 1, 1), zoom=PANEL_ZOOM)
        ax.view_init(elev=VIEW_ELEV, azim=VIEW_AZIM)
        ax.set_axis_off()
        ax.set_title(label, y=TITLE_Y)
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.0, top=0.9 if title else 1.0, wspace=0.0)
    os.makedirs(os.path.dirname(os.path.abspath(path_png)), exist_ok=True)
    with atomic_open(path_png, "wb") as f:
        fig.savefig(f, format="png", dpi=STRIP_DPI)
    return path_png


# ------------------------------------------------------------------------------------ HTML viewer
def vendored_3dmol_js() -> str:
    """Text of the vendored ``3Dmol-min.js`` (see ``crystalflow/resources/js/LICENSE-3Dmol.txt``)."""
    return Path(resource_path(*VENDORED_3DMOL)).read_text(encoding="utf-8")


def _script_safe_json(data: object) -> str:
    """JSON that can sit inside a <script> element (no '</' sequences, no HTML comment openers)."""
    return json.dumps(data).replace("</", "<\\/").replace("<!--", "<\\!--")


#: the part every 3Dmol page shares: the status element, the inlined 3Dmol.js, and the start of the page's
#: script (status and error handling, ``data``); a page template continues the function after it
SCRIPT_PRELUDE = """<div id="__STATUS__">loading</div>
<script>
/* 3Dmol.js __VERSION_NOTE__, inlined so this page works offline. Its licence:
__LICENCE__
*/
__3DMOL__
</script>
<script>
(function () {
  var status = document.getElementById("__STATUS__");
  window.addEventListener("error", function (e) { status.textContent = "error: " + e.message; });
  var data = __DATA__;
"""


def page_template(css: str, body: str, script: str) -> str:
    """A 3Dmol page template: the shared head, title and note, status element, inlined 3Dmol.js and
    error handling around a page's own ``css`` rules, ``body`` HTML and ``script`` (the inside of its
    function, where ``data`` and ``status`` are defined). :func:`write_3dmol_page` fills it in."""
    return _PAGE_HEAD + css + _PAGE_TOP + body + SCRIPT_PRELUDE + script + SCRIPT_EPILOGUE



_CANDIDATE_CSS = """ .row { display: flex; gap: 16px; align-items: flex-start; }
 #cf-viewer { flex: 1; height: 600px; position: relative; border: 1px solid #ccc; }
 table { border-collapse: collapse; font-size: 90%; }
 td, th { padding: 3px 8px; text-align: right; border-bottom: 1px solid #eee; }
 tr.cand { cursor: pointer; }
 tr.cand:hover { background: #f0f0f0; }
 tr.selected { background: #ffe4b5; }
"""


def candidate_page_template(headers: list[str], cells: list[str], draw: str) -> str:
    """The template of a candidates page (predict's viewers): a table with one row per entry of
    ``data.candidates`` (columns ``headers``, cells the entry's fields ``cells``; click a row to show it) beside
    one 3Dmol viewer; ``draw`` is the JavaScript that draws candidate ``k`` into ``viewer`` (after
    ``removeAllModels``, before ``zoomTo``). ``window.crystalflowShow(k)`` shows candidate k; the status element
    reads 'ok', 'no-webgl' or 'error: ...' (:func:`page_template`)."""
    head = "".join(f"<th>{h}</th>" for h in headers)
    row = ' + "</td><td>" + '.join(f"c.{c}" for c in cells)
    body = (f'<div class="row">\n<div><table><thead><tr>{head}</tr></thead><tbody id="cf-table"></tbody></table></div>\n'
            '<div id="cf-viewer"></div>\n</div>\n')
    script = """  var table = document.getElementById("cf-table");
  var rows = data.candidates.map(function (c, k) {
    var tr = document.createElement("tr");
    tr.className = "cand";
    tr.innerHTML = "<td>" + __ROW__ + "</td>";
    tr.addEventListener("click", function () { show(k); });
    table.appendChild(tr);
    return tr;
  });
  var viewer = null;
  function show(k) {
    rows.forEach(function (r, j) { r.className = j === k ? "cand selected" : "cand"; });
    if (viewer === null) { return; }
    viewer.removeAllModels();
__DRAW__
    viewer.zoomTo();
    viewer.render();
    window.crystalflowShown = k;
  }
  window.crystalflowShow = show;
  try {
    var probe = document.createElement("canvas");
    if (!(probe.getContext("webgl2") || probe.getContext("webgl"))) {
      status.textContent = "no-webgl";
      document.getElementById("cf-viewer").textContent = "WebGL is not available in this browser.";
      show(0);
      return;
    }
    if (typeof $3Dmol === "undefined") { throw new Error("3Dmol.js did not load"); }
    viewer = $3Dmol.createViewer(document.getElementById("cf-viewer"), { backgroundColor: "white" });
    window.crystalflowViewer = viewer;
    show(0);
""".replace("__ROW__", row).replace("__DRAW__", draw.rstrip("\n"))
    return page_template(_CANDIDATE_CSS, body, script)

_PAGE_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
 body { font-family: sans-serif; margin: 12px; }
"""
_PAGE_TOP = """ .note { color: #555; font-size: 90%; }
 #__STATUS__ { display: none; }
</style>
</head>
<body>
<h3>__TITLE__</h3>
<p class="note">__NOTE__</p>
"""

#: the end every 3Dmol page shares: report success, or the error, on the status element
SCRIPT_EPILOGUE = """    status.textContent = "ok";
  } catch (e) {
    status.textContent = "error: " + (e && e.message ? e.message : e);
  }
})();
</script>
</body>
</html>
"""

_PAGE = page_template(
    css=""" .row { display: flex; gap: 12px; }
 .panel { flex: 1; }
 .viewer { width: 100%; height: 520px; position: relative; border: 1px solid #ccc; }
""",
    body="""<div class="row">__PANELS__</div>
""",
    script="""  try {
    var probe = document.createElement("canvas");
    if (!(probe.getContext("webgl2") || probe.getContext("webgl"))) {
      status.textContent = "no-webgl";
      data.panels.forEach(function (p) {
        document.getElementById(p.id).textContent = "WebGL is not available in this browser.";
      });
      return;
    }
    if (typeof $3Dmol === "undefined") { throw new Error("3Dmol.js did not load"); }
    function draw(v, p, k) {
      v.removeAllModels();
      v.addModel(p.pdbs[k], "pdb", { keepH: true, assignBonds: false, noComputeSecondaryStructure: true });
      v.setStyle({}, { stick: { radius: data.stick, colorscheme: p.scheme },
                       sphere: { scale: data.sphere, colorscheme: p.scheme } });
      v.setStyle({ resi: 1 }, { stick: { radius: data.stick * 1.5, colorscheme: data.central },
                                sphere: { scale: data.sphere * 1.2, colorscheme: data.central } });
    }
    var viewers = data.panels.map(function (p) {
      var v = $3Dmol.createViewer(document.getElementById(p.id), { backgroundColor: "white" });
      draw(v, p, 0);
      return v;
    });
    window.crystalflowShowSample = function (k) {  // the prediction panel shows sample k
      draw(viewers[0], data.panels[0], k);
      viewers[0].render();
      window.crystalflowSample = k;
    };
    var select = document.getElementById("cf-sample");
    if (select) {
      select.addEventListener("change", function () { window.crystalflowShowSample(Number(select.value)); });
    }
    viewers[viewers.length - 1].zoomTo();
    var view = viewers[viewers.length - 1].getView();
    viewers.forEach(function (v) { v.setView(view); v.render(); });
    for (var a = 0; a < viewers.length; a++) {
      for (var b = 0; b < viewers.length; b++) { if (a !== b) { viewers[a].linkViewer(viewers[b]); } }
    }
    window.crystalflowViewers = viewers;
""",
)


def _vendored_licence() -> str:
    """The vendored 3Dmol.js licence text, safe inside a JavaScript block comment."""
    text = Path(resource_path(*VENDORED_3DMOL_LICENCE)).read_text(encoding="utf-8")
    return text.replace("*/", "* /").replace("</", "< /")


def write_3dmol_page(template: str, path_html: str, title: str, note: str, data: object,
                     extra: dict[str, str] | None = None) -> str:
    """Fill an HTML ``template`` that inlines 3Dmol.js and write it atomically to ``path_html``.

    Placeholders: ``__TITLE__`` and ``__NOTE__`` (escaped), ``__STATUS__`` (the status element id),
    ``__DATA__`` (``data`` as script-safe JSON), ``__VERSION_NOTE__`` and ``__LICENCE__`` (of the vendored
    3Dmol.js), ``__3DMOL__`` (the script itself) and any ``extra`` ones (inserted verbatim).
    """
    fills = {"__TITLE__": html.escape(title), "__NOTE__": html.escape(note), "__STATUS__": STATUS_ID,
             "__VERSION_NOTE__": VENDORED_3DMOL_VERSION, "__LICENCE__": _vendored_licence(),
             "__DATA__": _script_safe_json(data), **(extra or {})}
    pattern = re.compile("|".join(re.escape(key) for key in fills))
    # one pass, so filled-in text is never scanned again; the script goes in last, unscanned
    head, tail = (pattern.sub(lambda hit: fills[hit.group(0)], part) for part in template.split("__3DMOL__"))
    page = head + vendored_3dmol_js().replace("</script", "<\\/script") + tail
    os.makedirs(os.path.dirname(os.path.abspath(path_html)), exist_ok=True)
    write_text(path_html, page)
    return path_html


def viewer_html(pred: np.ndarray, truth: np.ndarray, z: np.ndarray, path_html: str,
                title: str = "crystalflow: prediction vs truth", labels: tuple[str, str] = ("prediction", "truth"),
                centre: bool = True, superpose: bool = True) -> str:
    """Write a self-contained HTML page with two linked 3D viewers, prediction and truth; return its path.

    ``pred`` is one cluster ``[M, n, 3]`` or K samples ``[K, M, n, 3]`` (a menu picks the one shown).
    The central molecule (molecule 0) is drawn thicker with orange carbons. With ``centre`` the
    prediction is translated so that its centroid falls on the truth's; with ``superpose`` also
    rotated onto it (Kabsch over all atoms, proper rotation — the scores are invariant to both, the
    picture is not). Both viewers start from the same view; rotating one rotates the other. The page needs no network:
    3Dmol.js is inlined. After the viewers are created the page sets the text of the hidden element
    ``#cf-status`` to ``ok`` (``no-webgl`` without WebGL, ``error: ...`` on a JavaScript error).
    """
    t = _first_sample(truth, "truth")
    samples = np.asarray(pred, dtype=np.float64)
    samples = samples[None] if samples.ndim == 3 else samples
    if samples.ndim != 4 or samples.shape[1:] != t.shape:
        raise ValueError(f"pred must have shape {t.shape} or [K, *{t.shape}], got {np.shape(pred)}")
    zz = _check_z(z, t.shape[1])
    shown = []
    for p in samples:
        if superpose:
            rot, shift, _ = kabsch(p.reshape(-1, 3), t.reshape(-1, 3))
            p = p @ rot.T + shift
        elif centre:
            p = p - p.reshape(-1, 3).mean(0) + t.reshape(-1, 3).mean(0)
        shown.append(p)
    bonds = molecule_bonds(t[0], zz)
    panels = [
        {"id": f"cf-viewer-{k}", "label": label, "scheme": scheme,
         "pdbs": [cluster_to_pdb(x, zz, chain=chain, bonds=bonds, title=label) for x in xs]}
        for k, (xs, label, scheme, chain) in enumerate(zip((shown, [t]), labels, VIEWER_SCHEMES, ("P", "T")))
    ]
    data = {"panels": panels, "stick": STICK_RADIUS, "sphere": SPHERE_SCALE, "central": CENTRAL_SCHEME}
    picker = ""
    if len(shown) > 1:
        options = "".join(f'<option value="{k}">sample {k + 1} of {len(shown)}</option>' for k in range(len(shown)))
        picker = f' <select id="cf-sample">{options}</select>'
    panel_html = "".join(
        f'<div class="panel"><b>{html.escape(pn["label"])}</b>{picker if k == 0 else ""}'
        f'<div id="{pn["id"]}" class="viewer"></div></div>'
        for k, pn in enumerate(panels)
    )
    m, n, _ = t.shape
    note = (f"{m} molecules × {n} atoms; central molecule thick with orange carbons. "
            "Drag to rotate (both views follow), scroll to zoom.")
    return write_3dmol_page(_PAGE, path_html, title, note, data, {"__PANELS__": panel_html})
