"""Writes notebooks/01..05 (outputs stripped). Run from the repository root."""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

SETUP = '''import os, json
from pathlib import Path
import numpy as np, pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

# The model folder of a finished run (results/{dataset}/{model}); the dataset folder is its parent.
RESULTS = Path(os.environ.get("MATEX_RESULTS", "results/synthetic/demo"))
DATASET = RESULTS.parent
assert DATASET.exists(), f"no run at {DATASET}: run ./run.sh pipeline first, or set MATEX_RESULTS"
pairs = pd.read_parquet(DATASET / "pairs.parquet")
images = np.load(DATASET / "images.npy", mmap_mode="r")   # model inputs, (n_pairs, S, S) uint8, row = pairs row
print(f"{RESULTS}: {len(pairs)} pairs, inputs {images.shape[1]}x{images.shape[2]}")'''


def nb(title, question, intro, cells):
    first = new_markdown_cell(f"# {title}\n\n**Question:** {question}\n\n{intro}")
    out = new_notebook(cells=[first] + [new_markdown_cell(c[1:]) if c.startswith("#") and not c.startswith("# ") and c.startswith("#|")
                                        else new_code_cell(c) for c in cells])
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return out


def md(text):
    return new_markdown_cell(text)


def code(text):
    return new_code_cell(text)


def make(title, question, intro, cells):
    out = new_notebook(cells=[new_markdown_cell(f"# {title}\n\n**Question:** {question}\n\n{intro}")] + cells)
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return out


NB = {}

NB["01_alignment"] = make(
    "01 · Box alignment",
    "do the radiologists' boxes land on the same anatomy once each image is cropped or letterboxed to the "
    "model's square input, and how many boxes were clipped or dropped on the way?",
    "Reads `pairs.parquet` (boxes in original and in input pixels, with a status per box), "
    "`alignment_report.json` and the original images when they are on disk. Nothing is recomputed "
    "except drawing. Set `MATEX_RESULTS` to a model folder (default `results/synthetic/demo`).",
    [code(SETUP),
     md("## The alignment report\nCounts written by the `prepare` rule: boxes clipped (partly outside the "
        "image or the crop) and dropped (nothing left), and rows skipped with `data.on_bad_row: skip`."),
     code('''report = json.loads((DATASET / "alignment_report.json").read_text())
for key, value in report.items():
    if not isinstance(value, (dict, list)) or key == "geometry":
        print(f"{key:>28}: {value}")
if report.get("skipped"):
    print("skipped rows:", report["skipped"][:10])
per_cat = report.get("per_category")
if isinstance(per_cat, dict):
    print(pd.DataFrame(per_cat).T)'''),
     md("## Box status per pair\nEvery box has a status: `ok`, `clipped` or `dropped`."),
     code('''status = pairs["box_status"].explode() if "box_status" in pairs else pd.Series(dtype=str)
print(status.value_counts().to_string() if len(status) else "no box_status column in this run")
cols = [c for c in ("category", "split") if c in pairs]
if cols and "box_status" in pairs:
    flag = pairs["box_status"].apply(lambda s: "clipped" if "clipped" in list(s) else ("dropped" if "dropped" in list(s) else "ok"))
    print(pd.crosstab(pairs[cols[0]], flag))'''),
     md("## Boxes before and after\nLeft: the original image with its boxes and the region the model sees "
        "(dashed). Right: the model input with the aligned boxes. Clipped pairs come first."),
     code('''from matex.data.transforms import InputGeometry

geo = report.get("geometry", {})
geometry = InputGeometry(int(geo.get("size", images.shape[1])), geo.get("mode", "center_crop"))
prov = json.loads((RESULTS / "provenance.json").read_text()) if (RESULTS / "provenance.json").exists() else {}
roots = [DATASET / "raw", Path(prov.get("config", {}).get("data", {}).get("mscxr", {}).get("root", "data/mscxr"))]

def original(row):
    for root in roots:
        path = root / row["image_path"]
        if path.exists():
            from PIL import Image
            with Image.open(path) as im:
                return np.asarray(im.convert("L"))
    return None

clipped = pairs.index[pairs["box_status"].apply(lambda s: "ok" not in set(s) or len(set(s)) > 1)] if "box_status" in pairs else []
order = list(clipped) + [i for i in pairs.index if i not in set(clipped)]
show = order[:4]
fig, axes = plt.subplots(len(show), 2, figsize=(6, 3 * len(show)), squeeze=False)
for (ax0, ax1), i in zip(axes, show):
    row = pairs.loc[i]
    img = original(row)
    if img is not None:
        ax0.imshow(img, cmap="gray")
        for x, y, w, h in row["boxes_orig"]:
            ax0.add_patch(plt.Rectangle((x, y), w, h, fill=False, color="lime"))
        a = geometry.affine(int(row["image_width"]), int(row["image_height"]))
        s = geometry.size
        x0, y0 = (0 - a.ox) / a.sx, (0 - a.oy) / a.sy
        ax0.add_patch(plt.Rectangle((x0, y0), s / a.sx, s / a.sy, fill=False, color="yellow", ls="--"))
    else:
        ax0.text(0.5, 0.5, "original not on disk", ha="center", transform=ax0.transAxes)
    ax0.set_title(f"{row['category']}: {list(row['box_status'])}", fontsize=8)
    ax1.imshow(images[i], cmap="gray")
    for x0, y0, x1, y1 in row["boxes"]:
        ax1.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime"))
    ax1.set_title(str(row["phrase"])[:40], fontsize=8)
for ax in axes.ravel():
    ax.axis("off")
plt.tight_layout()'''),
     ])

NB["02_maps"] = make(
    "02 · Every method on the same pairs",
    "what does each method's map look like on the same image–phrase pairs, and which of MATEX's "
    "components (rollout, consistency, gradient, prior) shapes its map?",
    "Reads the cached maps (`maps/{method}.npz`) of a finished run; nothing is recomputed. Set "
    "`MATEX_PAIRS` to comma-separated pair ids to choose pairs (default: the first four evaluated).",
    [code(SETUP),
     code('''from matex.io import read_npz

maps = {}
for path in sorted((RESULTS / "maps").glob("*.npz")):
    maps[path.stem], _ = read_npz(path)
methods = list(maps)
print("methods with maps:", methods)
first = maps["matex"] if "matex" in maps else next(iter(maps.values()))
explained = [k for k in first if "/" not in k]
chosen = [p for p in os.environ.get("MATEX_PAIRS", "").split(",") if p] or explained[:4]
row_of = {pid: i for i, pid in enumerate(pairs["pair_id"])}
for pid in chosen:
    r = pairs.loc[row_of[pid]]
    print(pid[:20], "|", r["category"], "|", r["phrase"])'''),
     md("## The maps\nOne row per pair, one column per method; the aligned boxes in green."),
     code('''fig, axes = plt.subplots(len(chosen), len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 2.0 * len(chosen)), squeeze=False)
for r_ax, pid in zip(axes, chosen):
    i = row_of[pid]
    img = images[i]
    r_ax[0].imshow(img, cmap="gray"); r_ax[0].set_title("input", fontsize=7)
    for ax, m in zip(r_ax[1:], methods):
        ax.imshow(img, cmap="gray")
        if pid in maps[m]:
            ax.imshow(maps[m][pid].astype(np.float32), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ax.set_title(m, fontsize=7)
    for ax in r_ax:
        for x0, y0, x1, y1 in pairs.loc[i, "boxes"]:
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=0.8))
        ax.axis("off")
plt.tight_layout()'''),
     md("## MATEX's components\nThe run stores MATEX's component maps when it is configured to (entries "
        "named `<component>/<pair_id>` in the map file, or a separate components file). If this run has "
        "none, the cell says so; `matex explain ... --components` draws them for any image."),
     code('''def component_maps(store):
    out = {}
    for key in store:
        if "/" in key and not key.startswith("text/"):
            name, pid = key.rsplit("/", 1)
            out.setdefault(name.replace("components/", ""), {})[pid] = store[key]
    return out

comps = component_maps(maps.get("matex", {}))
for path in sorted((RESULTS / "maps").glob("*component*")):
    if path.suffix == ".npz":
        comps.update(component_maps(read_npz(path)[0]) or {})
if not comps:
    print("this run saved no MATEX component maps")
else:
    names = sorted(comps)
    fig, axes = plt.subplots(len(chosen), len(names), figsize=(1.9 * len(names), 2.0 * len(chosen)), squeeze=False)
    for r_ax, pid in zip(axes, chosen):
        for ax, name in zip(r_ax, names):
            ax.imshow(images[row_of[pid]], cmap="gray")
            if pid in comps[name]:
                ax.imshow(np.asarray(comps[name][pid], dtype=np.float32), cmap="jet", alpha=0.45)
            ax.set_title(name, fontsize=7); ax.axis("off")
    plt.tight_layout()'''),
     md("## Token scores (text side)\nMethods with a text side store one score per token as `text/<pair_id>`; "
        "token strings are shown when the run stored them."),
     code('''for m in methods:
    text_keys = [k for k in maps[m] if k.startswith("text/")]
    if not text_keys:
        continue
    for pid in chosen:
        scores = maps[m].get(f"text/{pid}")
        tokens = maps[m].get(f"text_tokens/{pid}")
        if scores is None:
            continue
        shown = list(zip(list(tokens), np.round(scores, 2))) if tokens is not None else np.round(scores, 2).tolist()
        print(f"{m} | {pairs.loc[row_of[pid], 'phrase']!r}: {shown}")'''),
     ])

NB["03_metrics"] = make(
    "03 · Metrics per finding, and paired differences",
    "how do the methods compare overall and per finding, and which differences from MATEX hold up when "
    "the same pairs are compared (paired bootstrap)?",
    "Reads `metrics/{method}.parquet` (one row per pair) and `tables/results.md`; every numeric column "
    "the run has is used, so columns added later appear without changes here.",
    [code(SETUP),
     code('''frames = [pd.read_parquet(p) for p in sorted((RESULTS / "metrics").glob("*.parquet"))]
metrics = pd.concat(frames, ignore_index=True)
ids = {"pair_id", "method", "category", "split", "patient_id"}
columns = [c for c in metrics.columns if c not in ids and pd.api.types.is_numeric_dtype(metrics[c])]
print(len(metrics), "rows;", metrics["method"].nunique(), "methods; metric columns:", columns)'''),
     md("## Overall means (per-pair values averaged; NaN excluded)"),
     code('''overall = metrics.groupby("method")[columns].mean()
print(overall.round(3).to_string())'''),
     md("## Per finding\nOne table per metric: finding × method, with the number of pairs per finding. "
        "Means over a handful of pairs are unreliable."),
     code('''if "category" in metrics:
    print(metrics.groupby("category")["pair_id"].nunique().rename("pairs").to_string(), "\\n")
    for col in columns:
        table = metrics.pivot_table(index="category", columns="method", values=col, aggfunc="mean")
        print(f"--- {col}"); print(table.round(3).to_string(), "\\n")'''),
     md("## Paired differences from the reference method\nFor each method and metric: the mean of "
        "(method − reference) over the pairs both have, with a 95 % bootstrap interval over pairs "
        "(2 000 resamples, seeded). An interval that excludes 0 is a difference these pairs support."),
     code('''REFERENCE = os.environ.get("MATEX_REFERENCE", "matex")
if REFERENCE not in set(metrics["method"]):
    REFERENCE = metrics["method"].iloc[0]
rng = np.random.default_rng(0)
rows = []
ref = metrics[metrics["method"] == REFERENCE].set_index("pair_id")
for method, grp in metrics[metrics["method"] != REFERENCE].groupby("method"):
    g = grp.set_index("pair_id")
    shared = g.index.intersection(ref.index)
    for col in columns:
        d = (g.loc[shared, col] - ref.loc[shared, col]).to_numpy(dtype=float)
        d = d[np.isfinite(d)]
        if len(d) < 2:
            continue
        boot = rng.choice(d, size=(2000, len(d))).mean(axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        rows.append(dict(method=method, metric=col, n=len(d), diff=d.mean(), low=lo, high=hi,
                         supported=not (lo <= 0 <= hi)))
paired = pd.DataFrame(rows)
print(f"differences from {REFERENCE}:")
print(paired.round(4).to_string(index=False) if len(paired) else "nothing to compare")'''),
     md("## The pipeline's own table\n`tables/results.md`, written by the `aggregate` rule (bootstrap "
        "intervals, ROAR+ columns)."),
     code('''table = RESULTS / "tables" / "results.md"
print(table.read_text()[:6000] if table.exists() else "no tables/results.md yet")'''),
     ])

NB["04_roar"] = make(
    "04 · ROAR+: what was removed, and what it did",
    "what did ROAR+ remove from the training images for each method, and how did each fine-tuning run's "
    "validation loss end compared with the clean run of the same seed?",
    "Reads `roar/maps/{method}.npz` (maps of the training pairs), the run records `roar/runs/**.json` and "
    "`roar/roar_summary.parquet`. The degraded images are redrawn from the stored maps with the same "
    "function the pipeline uses (`matex.roar.degrade.degrade_images`), or read when the run stored them.",
    [code(SETUP),
     code('''runs = []
for path in sorted((RESULTS / "roar" / "runs").rglob("*.json")):
    rec = json.loads(path.read_text())
    rec = {k: v for k, v in rec.items() if not isinstance(v, (list, dict))}
    rec["file"] = str(path.relative_to(RESULTS / "roar" / "runs"))
    runs.append(rec)
runs = pd.DataFrame(runs)
show = [c for c in ("file", "variant", "modality", "seed", "removed_fraction", "val_loss", "val_loss_before") if c in runs]
print(runs[show].to_string(index=False) if len(runs) else "no ROAR+ runs in this folder")'''),
     md("## ROAR+ per run\nROAR+ = 100·(L_val(degraded) − L_val(clean)) / L_val(clean), each run against the "
        "clean run of its own seed."),
     code('''if len(runs) and {"variant", "seed", "val_loss"} <= set(runs.columns):
    clean = runs[runs["variant"] == "clean"].set_index("seed")["val_loss"]
    deg = runs[runs["variant"] != "clean"].copy()
    deg["roar_plus"] = [100 * (v - clean.get(s, np.nan)) / clean.get(s, np.nan) for v, s in zip(deg["val_loss"], deg["seed"])]
    keys = [c for c in ("modality", "variant", "removed_fraction") if c in deg]
    print(deg.groupby(keys)["roar_plus"].agg(["mean", "std", "count"]).round(3).to_string())
    if "removed_fraction" in deg and deg["removed_fraction"].nunique() > 1:
        fig, ax = plt.subplots(figsize=(4, 3))
        for variant, g in deg.groupby("variant"):
            c = g.groupby("removed_fraction")["roar_plus"].mean()
            ax.plot(c.index * 100, c.values, marker="o", label=variant)
        ax.set_xlabel("removed (%)"); ax.set_ylabel("ROAR+"); ax.legend(fontsize=7)
summary = RESULTS / "roar" / "roar_summary.parquet"
if summary.exists():
    print(pd.read_parquet(summary).round(4).to_string(index=False))'''),
     md("## The degraded training images\nFor a few training pairs: the input, and what each method's "
        "removal left (top pixels replaced by the training set's mean grey)."),
     code('''from matex.io import read_npz
from matex.roar.degrade import degrade_images

stored = sorted((RESULTS / "roar").rglob("*degraded*.npz"))
fraction = float(runs["removed_fraction"].replace(0, np.nan).dropna().iloc[0]) if "removed_fraction" in runs and runs["removed_fraction"].replace(0, np.nan).notna().any() else 0.1
train_rows = np.flatnonzero(pairs["split"].to_numpy() == "train") if "split" in pairs else np.arange(len(pairs))
fill = float(np.asarray(images[train_rows]).mean())
row_of = {pid: i for i, pid in enumerate(pairs["pair_id"])}
roar_maps = {p.stem: read_npz(p)[0] for p in sorted((RESULTS / "roar" / "maps").glob("*.npz"))}
if stored:
    print("degraded images stored by the run:", [str(p) for p in stored])
    arrays, _ = read_npz(stored[0])
    keys = list(arrays)[:8]
    fig, axes = plt.subplots(1, len(keys), figsize=(2 * len(keys), 2.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.imshow(arrays[k], cmap="gray"); ax.set_title(k[-24:], fontsize=6); ax.axis("off")
elif roar_maps:
    methods = list(roar_maps)
    sample = [k for k in roar_maps[methods[0]] if "/" not in k][:3]
    print(f"top {fraction:.0%} replaced by grey {fill:.1f}; methods: {methods}")
    fig, axes = plt.subplots(len(sample), len(methods) + 1, figsize=(1.9 * (len(methods) + 1), 2 * len(sample)), squeeze=False)
    for r_ax, pid in zip(axes, sample):
        img = np.asarray(images[row_of[pid]])
        r_ax[0].imshow(img, cmap="gray", vmin=0, vmax=255); r_ax[0].set_title("input", fontsize=7)
        for ax, m in zip(r_ax[1:], methods):
            if pid in roar_maps[m]:
                out = degrade_images(img[None], roar_maps[m][pid][None].astype(np.float32), fraction, fill)[0]
                ax.imshow(out, cmap="gray", vmin=0, vmax=255)
            ax.set_title(m, fontsize=7)
        for ax in r_ax:
            ax.axis("off")
    plt.tight_layout()
else:
    print("no ROAR+ maps in this run")'''),
     ])

NB["05_prior"] = make(
    "05 · The text prior of a phrase",
    "how does the rule-based parser read a phrase (laterality, zone, structure, negation, uncertainty), "
    "and what spatial prior does MATEX get from it?",
    "Set `MATEX_PHRASE` to try your own phrase. The parse and the prior depend only on the text; this "
    "notebook computes them with `matex.priors` (no model) and, when a run exists, summarises how the "
    "run's phrases were read.",
    [code('''import os, json
from pathlib import Path
import numpy as np, pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matex.priors import parse_phrase, spatial_prior

PHRASES = [p for p in [os.environ.get("MATEX_PHRASE")] if p] + [
    "Left lower lobe consolidation", "small right pleural effusion", "bibasilar atelectasis",
    "no pneumothorax", "enlarged cardiac silhouette", "possible right upper lobe pneumonia",
    "patchy opacity in the lingula", "pulmonary edema"]
rows = []
for text in PHRASES:
    p = parse_phrase(text)
    rows.append({"phrase": text, **p.as_record()})
print(pd.DataFrame(rows).to_string(index=False))'''),
     md("## The priors\nP = 1 + (λ_s − 1)·max_k m_k at λ_s = 2.5, σ = 0.1; a flat image means no location "
        "(or a negated finding). The patient's right is the image's left."),
     code('''fig, axes = plt.subplots(1, len(PHRASES), figsize=(2.0 * len(PHRASES), 2.4))
for ax, text in zip(axes, PHRASES):
    prior = spatial_prior(text, (224, 224))
    ax.imshow(prior, cmap="magma", vmin=1.0, vmax=2.5)
    ax.set_title(text[:26], fontsize=7); ax.axis("off")
plt.tight_layout()'''),
     md("## The run's phrases\nWhen a run exists (`MATEX_RESULTS`): how many phrases per finding carry a "
        "location, and the regions the parser found most often."),
     code('''RESULTS = Path(os.environ.get("MATEX_RESULTS", "results/synthetic/demo"))
pairs_path = RESULTS.parent / "pairs.parquet"
if pairs_path.exists():
    pairs = pd.read_parquet(pairs_path)
    parsed = pd.DataFrame([parse_phrase(t).as_record() for t in pairs["phrase"]])
    parsed["category"] = pairs["category"].to_numpy()
    print(parsed.groupby("category")["prior_has_location"].mean().round(2).rename("with location").to_string())
    print(parsed["prior_regions"].str.split(";").explode().replace("", np.nan).dropna().value_counts().head(12).to_string())
else:
    print(f"no run at {pairs_path.parent}")'''),
     ])

for name, notebook in NB.items():
    nbformat.write(notebook, f"notebooks/{name}.ipynb")
    print("wrote", name)
