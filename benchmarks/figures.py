"""One source for every measured figure on the pages: the result files under `docs/results/` (what a benchmark
wrote, with the machine it ran on and the command that reproduces it), rendered into generated regions of the
README and the docs:

    <!-- figures: demo -->
    (generated: a caption naming the machine, the command and the file, then the figures)
    <!-- /figures -->

A region names a renderer below and, for some, its arguments (`<!-- figures: family_latency as_mlp_tiny -->`). The
same region on two pages renders the same text, so no figure can stand on two pages with two values, and
`tests/test_docs.py` fails when a region differs from what its result file renders.

    python benchmarks/figures.py           # rewrite every region from docs/results/
    python benchmarks/figures.py --check   # list the regions that differ from their source (exit 1)
"""

import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGES = ("README.md", "deploy/README.md", "android_demo/README.md", "docs/*.md")
# a region, indented as the list item or block it sits in (its rendered lines get the same indentation)
REGION = re.compile(r"^(?P<indent>[ \t]*)<!-- figures: (?P<name>\w+)(?P<args>(?: [\w.]+)*) -->\n(?P<body>.*?)"
                    r"^(?P=indent)<!-- /figures -->", re.S | re.M)

# (family, its smallest released variant, its Edge-TPU-sized variant): the order every family table follows
FAMILIES = (("MLP-Mixer", "mixer_s32", "mixer_edgetpu"), ("AS-MLP", "as_mlp_tiny", "as_mlp_edgetpu"),
            ("Hire-MLP", "hire_mlp_tiny", "hire_mlp_edgetpu"), ("Vision Permutator", "vip_small14", "vip_edgetpu"),
            ("RaftMLP", "raft_mlp_small", "raft_mlp_edgetpu"), ("Sparse-MLP", "sparse_mlp_small", None))

MIXER_NAMES = {"mixer_s32": "Mixer-S/32", "mixer_s16": "Mixer-S/16", "mixer_b16": "Mixer-B/16",
               "mixer_l16": "Mixer-L/16", "mixer_h14": "Mixer-H/14", "mixer_tiny": "tiny Mixer"}


def load(name):
    with open(RESULTS / f"{name}.json", encoding="utf-8") as file:
        return json.load(file)


def caption(result, name, *also):
    """Where a figure was measured, for the line above its table: the machine and the result file(s), which hold
    the command that measures it again. `also`: more result files of the same table, from the same machine."""
    machine, versions = result["machine"], result["machine"]["versions"]
    for other in also:
        if (load(other)["machine"]["cpu"], load(other)["machine"]["vector_extension"]) != (
                machine["cpu"], machine["vector_extension"]):
            raise ValueError(f"{name}.json and {other}.json come from different machines: one table cannot hold both")
    software = ", ".join(f"{label} {versions[key]}" for key, label in
                         (("tensorflow", "TensorFlow"), ("keras", "Keras"), ("ai_edge_litert", "LiteRT"))
                         if versions.get(key))
    files = ", ".join(f"`docs/results/{one}.json`" for one in (name, *also))
    runs = "one run each ({}, with the commands that reproduce them)" if also else \
        "one run ({}, with the command that reproduces it)"
    return f"Measured on {on_machine(machine)} ({software}), {runs.format(files)}."


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def percent(value, digits=2):
    return f"{value:.{digits}%}".replace("%", " %")


def on_machine(machine):
    """"2 cores of an AMD EPYC with AVX-512 VNNI": the words every caption uses for a result's machine."""
    return f"{machine['cores']} cores of an {machine['cpu']} with {machine['vector_extension']}"


def install():
    """The README's install sentence: time and size of its two commands on a fresh virtualenv."""
    result = load("install")
    first, second = result["rows"]
    machine = result["machine"]
    return (f"Measured on a fresh virtualenv ({machine['cores']} cores of an {machine['cpu']}; pip's download cache "
            f"warm, other jobs running; `docs/results/install.json`): command 1 installs "
            f"{first['environment_mb'] / 1024:.1f} GB in {first['seconds']} s (no PyTorch), command 2 brings the "
            f"environment to {second['environment_mb'] / 1024:.1f} GB in another {second['seconds']} s.")


def demo():
    """The digits demo's table (`keras-mixer demo`): top-1, agreement, size, latency and Edge TPU mapping per file."""
    result = load("demo")
    names = {"keras float": "Keras float", "keras QAT": "Keras QAT", "float32": "float32 `.tflite`",
             "int8 (QAT)": "int8 `.tflite` (QAT)", "int8 (PTQ)": "int8 `.tflite` (PTQ)",
             "all-int8 (QAT)": "all-int8 `.tflite` (QAT, `integer_only=True`)",
             "int8 Edge TPU": "int8 Edge TPU form (PTQ)"}
    rows = []
    for key, row in result["results"].items():
        edgetpu = row.get("edgetpu", "–").replace("/", " / ").replace("rejected", "rejected (GELU)")
        rows.append([names[key], percent(row["top1"]),
                     percent(row["agreement"], 1) if "agreement" in row else "–",
                     f"{row['size_kb']:.0f} KB" if "size_kb" in row else "–",
                     f"{row['latency_ms_median']:.3f} ms" if "latency_ms_median" in row else "–", edgetpu])
    examples = result["results"]["float32"]["examples"]
    header = ["model", f"top-1 ({examples} test images)", "argmax agreement*", "size", "latency**", "Edge TPU ops***"]
    notes = ("\\* with the Keras model it was exported from. \\*\\* LiteRT on this CPU, 1 thread, median of one "
             "`invoke`, batch 1. \\*\\*\\* ops the Coral compiler would map by its documented rules "
             "(`keras-mixer edgetpu-check`; the compiler itself could not be run here).")
    return caption(result, "demo") + "\n\n" + table(header, rows) + "\n\n" + notes


def _three_digits(value):
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def peer_summary():
    """The README's speed table: ours against Google's PyTorch -> LiteRT path and timm, batch 1, 1 / 2 threads."""
    result = load("benchmark_edge_peer")
    cells = {(r["model"], r["runtime"], r["threads"]): r for r in result["rows"] if r["batch"] == 1}

    def both(value):  # value(threads) at 1 and at 2 threads
        return " / ".join(value(threads) for threads in (1, 2))

    def ms(model, runtime):
        return both(lambda t: _three_digits(cells[model, runtime, t]["median_ms"]))

    def peer_over_ours(model, threads):
        return (cells[model, "litert_torch_dynamic_int8", threads]["median_ms"]
                / cells[model, "tflite_int8", threads]["median_ms"])

    rows = []
    for model in ("mixer_s32", "mixer_s16", "mixer_b16"):
        ratio = both(lambda t: f"{peer_over_ours(model, t):.2f}×")
        share = both(lambda t: percent(cells[model, "tflite_int8", t]["share_of_peak"], 0))
        rows.append([MIXER_NAMES[model], ms(model, "tflite_int8"), ms(model, "litert_torch_dynamic_int8"), ratio,
                     share, ms(model, "tflite_int8_integer"), ms(model, "litert_torch_static_int8"),
                     ms(model, "timm_eager")])
    header = ["model", "our int8 `.tflite`", "peer int8 (`dynamic_wi8_afp32`)", "peer / ours",
              "share of int8 peak (ours)", "our all-int8", "peer all-int8 (`static_wi8_ai8`)", "timm eager"]
    return caption(result, "benchmark_edge_peer") + " Batch 1, median ms at 1 / 2 threads.\n\n" + table(header, rows)


def benchmark(name):
    """Every row of a `keras-mixer benchmark` result file, with the columns that run recorded."""
    from keras_mixer.benchmark import markdown_table

    result = load(name)
    return caption(result, name) + "\n\n" + markdown_table(result["rows"])


def _latency_rows():
    result = load("tflite_latency")
    return result, {(row["model"], row["threads"]): row for row in result["rows"]}


def _ms(value):
    return "refused" if value is None else f"{value:.1f}"


def family_latency(*models):
    """float32, default int8 and all-int8 TFLite latency of the given models at 224x224 (models.md)."""
    result, rows = _latency_rows()
    body = []
    for model in models:
        for threads in (1, 2):
            ms = rows[model, threads]["median_ms"]
            body.append([f"`{model}`", threads, _ms(ms["float32"]), _ms(ms["int8"]),
                         f"{ms['int8'] / ms['float32']:.2f}", _ms(ms["integer"])])
    header = ["model", "threads", "float32 ms", "int8 ms", "int8 / float32", "all-int8 ms"]
    return caption(result, "tflite_latency") + "\n\n" + table(header, body)


def edgetpu_forms():
    """Every family's Edge TPU form at 224x224: ops mapped, size, and CPU latency of each int8 export."""
    result, rows = _latency_rows()
    body = []
    models = [small for _, small, _ in FAMILIES] + [sized for _, _, sized in FAMILIES if sized]
    for model in models:
        one, two = rows[model, 1], rows[model, 2]
        pair = {mode: " / ".join(_ms(row["median_ms"][mode]) for row in (one, two)) if one["median_ms"][mode]
                is not None else "refused" for mode in ("int8", "integer", "edgetpu")}  # one "refused", not two
        name = f"`{model}`" + (" (`experts_on_cpu`)" if model.startswith("sparse_mlp") else "")
        body.append([name, f"{one['edgetpu_ops']} / {one['ops']}", f"{one['edgetpu_form_mib']:.1f}", pair["int8"],
                     pair["integer"], pair["edgetpu"]])
    header = ["model", "ops mapped", "form MiB (cache ~8)", "default int8 ms", "all-int8 ms", "Edge-TPU form ms"]
    return caption(result, "tflite_latency") + " Median ms at 1 / 2 threads.\n\n" + table(header, body)


def edgetpu_digits():
    """The Edge-TPU-sized variants trained on digits: float top-1 against the form's, all int8."""
    result = load("edgetpu_digits")
    body = [[f"`{row['model']}`", f"{row['params'] / 1e6:.2f} M", percent(row["float_top1"]),
             percent(row["form_top1"]), f"{row['edgetpu_ops']} / {row['ops']}", f"{row['form_mib']:.1f}"]
            for row in result["rows"]]
    header = ["model", "parameters", "float top-1", "Edge-TPU form top-1", "ops mapped", "form MiB"]
    return caption(result, "edgetpu_digits") + "\n\n" + table(header, body)


def edgetpu_families():
    """The README's Edge TPU table: each family's smallest variant at 224 and its Edge-TPU-sized variant."""
    latency, rows = _latency_rows()
    digits = load("edgetpu_digits")
    trained = {row["model"]: row for row in digits["rows"]}
    body = []
    for family, small, sized in FAMILIES:
        row = rows[small, 1]
        mapped = f"`{small}`: {row['edgetpu_ops']} / {row['ops']}" + (
            " (experts on the CPU)" if row["edgetpu_ops"] < row["ops"] else "") + f", {row['edgetpu_form_mib']:.1f}"
        ratio = row["median_ms"]["edgetpu"] / row["median_ms"]["int8"]
        new = f"`{sized}`, {rows[sized, 1]['edgetpu_form_mib']:.1f}" if sized else "–"
        top1 = (f"{percent(trained[sized]['float_top1'])} → {percent(trained[sized]['form_top1'])}"
                if sized in trained else "–")
        body.append([family, mapped, new, f"{ratio:.2f}", top1])
    header = ["family", "smallest variant: ops mapped, MiB", "fits the ~8 MiB cache: new variant, MiB",
              "form / default int8 on CPU (1 thread)", "new variant on digits: float → form top-1"]
    return caption(latency, "tflite_latency", "edgetpu_digits") + "\n\n" + table(header, body)


def int8_outliers():
    """Logit SQNR and argmax agreement of every int8 form of the digits Mixer, with and without outlier channels."""
    result = load("int8_outliers")
    forms = list(dict.fromkeys(row["form"] for row in result["rows"]))
    cells = {}
    for row in result["rows"]:
        cells.setdefault((row["model"], row["export"]), []).append(
            f"{row['sqnr_db']:.1f} dB / {percent(row['argmax_agreement'], 1)}")
    body = [[model, export, *values] for (model, export), values in cells.items()]
    return (caption(result, "int8_outliers") + f" Float top-1 {percent(result['float_top1'])}.\n\n"
            + table(["model", "export", *forms], body))


def int8_outliers_headline():
    """The README's sentence: the Edge TPU form of the digits Mixer given outlier channels, without and with our
    defaults."""
    result = load("int8_outliers")
    cell = {(r["model"], r["export"], r["form"]): r for r in result["rows"]}
    before = cell["with outlier channels", "min/max ranges, no equalization", "Edge TPU form"]
    after = cell["with outlier channels", "percentile ranges, equalization (default)", "Edge TPU form"]
    clean = cell["as trained", "percentile ranges, equalization (default)", "Edge TPU form"]
    return (f"The digits Mixer given such channels (factors up to 100): Edge TPU form {before['sqnr_db']:.1f} → "
            f"{after['sqnr_db']:.1f} dB logit SQNR against float ({clean['sqnr_db']:.1f} without them), argmax "
            f"agreement {percent(before['argmax_agreement'], 1)} → {percent(after['argmax_agreement'], 1)}"
            + f" (`{result['command']}`).")


BACKENDS = {"tensorflow": "Keras, TensorFlow backend", "jax": "Keras, JAX backend", "torch": "Keras, torch backend",
            "timm (torch eager)": "timm (PyTorch eager)"}


def _runs(name, keep):
    result = load(name)
    runs = [run for run in result["runs"] if keep(run)]
    machines = {json.dumps(run["machine"], sort_keys=True) for run in runs}
    if len(machines) != 1:  # ratios across machines mean nothing
        raise ValueError(f"{name}.json: the runs of one table must come from one machine, found {len(machines)}")
    machine = runs[0]["machine"]
    return runs, (f"Measured on {on_machine(machine)}, one run per model (`docs/results/{name}.json`, with the "
                  "commands that reproduce them).")


def train_backends():
    """One training step on every Keras backend and timm, the same function (tanh GELU), images/s and GFLOP/s."""
    runs, text = _runs("train_throughput", lambda run: len({row["backend"] for row in run["rows"]}) > 2)
    body = []
    for run in runs:
        timm = next(row for row in run["rows"] if row["backend"].startswith("timm"))
        for row in run["rows"]:
            gflops = row["images_per_second"] * 6 * run["forward_gmacs"]
            body.append([MIXER_NAMES[run["model"]], BACKENDS[row["backend"]], f"{row['images_per_second']:.1f}",
                         f"{row['ms_per_step']:.0f}", f"{row['images_per_second'] / timm['images_per_second']:.2f}×",
                         f"{gflops:.0f}", percent(gflops / run["matmul_peak_gflops"], 0)])
    header = ["model", "framework", "images/s", "ms/step", "vs timm", "GFLOP/s", "of the matmul peak"]
    return text + "\n\n" + table(header, body)


def train_gelu():
    """Keras on torch against timm with each GELU form."""
    runs, text = _runs("train_throughput", lambda run: len({row["gelu"] for row in run["rows"]}) > 1)
    body = []
    for run in runs:
        for gelu, label in (("tanh", "tanh (official)"), ("exact", "exact (timm's default)")):
            rate = {row["backend"]: row["images_per_second"] for row in run["rows"] if row["gelu"] == gelu}
            keras_rate, timm_rate = rate["torch"], rate["timm (torch eager)"]
            body.append([MIXER_NAMES[run["model"]], label, f"{keras_rate:.1f}", f"{timm_rate:.1f}",
                         f"{keras_rate / timm_rate:.2f}×"])
    header = ["model", "GELU", "Keras torch images/s", "timm images/s", "Keras / timm"]
    return text + "\n\n" + table(header, body)


def train_phases():
    """Keras on torch and timm in one process, one step of each in turn, split into phases (median ms)."""
    runs, text = _runs("train_step_phases", lambda run: True)
    body = []
    for run in runs:
        phases = run["phases_ms"]
        ratio = run["step_ms"]["timm"] / run["step_ms"]["keras"]
        for side, label in (("keras", "Keras (torch)"), ("timm", "timm")):
            body.append([MIXER_NAMES[run["model"]], label, *(f"{phases[side][p]:.0f}" for p in
                                                           ("forward", "backward", "optimizer")),
                         f"{run['step_ms'][side]:.0f}", f"{ratio:.2f}×" if side == "keras" else ""])
    header = ["model", "", "forward", "backward", "optimizer", "step", "timm / Keras"]
    return text + "\n\n" + table(header, body)


ACCELERATOR_IMAGES_PER_S = 1000  # the model speed the cores-per-accelerator figure is stated at


def digits_training():
    """The training page's sentence on digits: `keras-mixer train`'s digits recipe against the demo's loop."""
    train, demo_result = load("train_digits"), load("demo")
    machine = train["machine"]
    return (f"`{train['command']}` (the `digits` recipe, {train['steps']} steps) reaches "
            f"{percent(train['eval_top1'])} eval top-1 on the demo's {train['eval_examples']} test scans after "
            f"{train['training_seconds']:.0f} s of training on {on_machine(machine)}; the demo's own shorter loop "
            f"(`keras_mixer.demo.train_float`, the table on the "
            f"[home page](index.md)) reaches {percent(demo_result['results']['keras float']['top1'])} on the same scans "
            f"(`docs/results/train_digits.json`, `docs/results/demo.json`).")


def train_summary():
    """The training page's sentence: Keras on each backend against timm, the same function."""
    phases, _ = _runs("train_step_phases", lambda run: True)
    backends, _ = _runs("train_throughput", lambda run: len({row["backend"] for row in run["rows"]}) > 2)
    interleaved = " and ".join(f"{run['step_ms']['timm'] / run['step_ms']['keras']:.2f}× timm on "
                               f"{MIXER_NAMES[run['model']]}" for run in phases)

    def span(backend):
        ratios = []
        for run in backends:
            rate = {row["backend"]: row["images_per_second"] for row in run["rows"]}
            ratios.append(rate[backend] / rate["timm (torch eager)"])
        return f"{min(ratios):.2f}–{max(ratios):.2f}×"

    machine = phases[0]["machine"]
    return (f"Keras' torch backend against timm eager computing the same function, one step of each in turn in one "
            f"process: **{interleaved}**; in separate processes JAX runs at {span('jax')} and TensorFlow at "
            f"{span('tensorflow')} timm (one training step at 224×224, batch 32, on {on_machine(machine)}; "
            f"`docs/results/train_step_phases.json`, "
            f"`docs/results/train_throughput.json`, tables in [Benchmarks](benchmarks.md)).")


def input_pipeline():
    """Training input pipelines, ours against timm's, on one JPEG folder and the same cores."""
    result = load("input_pipeline")
    cores = result["machine"]["cores"]
    rates = {(row["recipe"], row["pipeline"]): row["images_per_s"] for row in result["rows"]}
    recipes = list(dict.fromkeys(row["recipe"] for row in result["rows"]))
    body = []
    for recipe in recipes:
        ours, timm = rates[recipe, "keras_mixer"], rates[recipe, "timm"]
        body.append([recipe, f"{ours:.0f} ({ours / cores:.0f} per core)", f"{timm:.0f} ({timm / cores:.0f} per core)",
                     f"{ours / timm:.2f}×"])
    header = ["recipe", "keras_mixer images/s", f"timm images/s ({cores} workers)", "ours / timm"]

    def cores_needed(recipe, pipeline):
        return math.ceil(ACCELERATOR_IMAGES_PER_S / (rates[recipe, pipeline] / cores))

    needs = "; ".join(f"{recipe.split(' ')[0]}: {cores_needed(recipe, 'keras_mixer')} "
                      f"(timm: {cores_needed(recipe, 'timm')})" for recipe in recipes)
    return (caption(result, "input_pipeline") + f" Batch {result['batch_size']}, 224×224.\n\n"
            + table(header, body) + f"\n\nHost cores of this kind that keep one accelerator training at "
            f"{ACCELERATOR_IMAGES_PER_S:,} images/s fed: {needs}.")


def train_gpu(name="train_gpu"):
    """`benchmarks/train_gpu.py`: images/s of keras_mixer on each backend and feed against timm, with MFU on a GPU,
    and where any row counted them (torch with CUDA), the host's waits for the GPU per step."""
    result = load(name)
    machine, settings = result["machine"], result["settings"]
    where = f"one {machine['gpu']}" if machine.get("gpu") else on_machine(machine)
    waits = any(row.get("host_waits_per_step") is not None for row in result["rows"])
    body = []
    for row in result["rows"]:
        if "error" in row:
            body.append([MIXER_NAMES.get(row["model"], row["model"]), row["backend"], row["feed"], "–",
                         f"failed: {row['error']}", "–", "–", "–"] + ["–"] * waits)
            continue
        memory = f"{row['peak_device_bytes'] / 2**30:.1f} GiB" if row.get("peak_device_bytes") else "–"
        count = row.get("host_waits_per_step")
        count = f"{count:g}" if count is not None else "–"
        body.append([MIXER_NAMES.get(row["model"], row["model"]), row["backend"], row["feed"], row["strategy"],
                     f"{row['images_per_second']:,.0f}", percent(row["mfu"], 1) if row.get("mfu") else "–",
                     f"{row['first_step_seconds']:.1f}", memory] + [count] * waits)
    header = ["model", "backend", "feed", "strategy", "images/s", "MFU", "first step s", "peak memory"]
    header += ["host waits / step"] * waits
    return (f"Measured on {where} (`docs/results/{name}.json`, with the command that reproduces it): "
            f"{settings['image_size']}×{settings['image_size']}, batch {settings['batch_size']}, "
            f"{settings['precision']}, {settings['steps']} timed steps.\n\n" + table(header, body))


def gpu_baseline():
    """The first GPU run (one H200, before the trainer split batches, fed uint8 and picked bf16), as recorded."""
    result = load("train_gpu_h200_baseline")
    versions = ", ".join(f"{name} {version}" for name, version in result["machine"]["versions"].items() if version)
    body = [[row["path"], f"{row['images_per_second']:,}" if row["images_per_second"] else row["note"],
             percent(row["mfu"], 1) if row["mfu"] else ""] for row in result["rows"]]
    return (f"Measured on one {result['machine']['gpu']} on {result['date']}, package at commit "
            f"{result['package_commit']} ({versions}; `docs/results/train_gpu_h200_baseline.json`). "
            f"{result['description']}\n\n" + table(["path", "images/s", "MFU"], body))


def export_memory():
    """Peak resident memory and time of the exports of the large variants, against their float32 weights."""
    result = load("export_memory")
    routes = {"blocks": "by blocks", "whole": "whole"}
    body = [[MIXER_NAMES.get(row["model"], row["model"]), f"{row['quantization']}, {routes[row.get('route', 'whole')]}",
             f"{row['float32_weights_mb']:.0f}", f"{row['peak_rss_mb']:.0f}", f"{row['peak_over_weights']:.1f}×",
             f"{row['seconds']:.0f}", f"{row['file_mb']:.0f}"] for row in result["rows"]]
    header = ["model", "export", "weights MB", "peak RSS MB", "peak / weights", "s", "file MB"]
    text = caption(result, "export_memory") + "\n\n" + table(header, body)
    failures = result.get("failures") or {}
    if failures:
        def described(key):
            model, quantization, *route = key.split()
            return f"{MIXER_NAMES.get(model, model)} {quantization}{', ' + routes[route[0]] if route else ''}"

        text += "\n\nFailed in the same run: " + ", ".join(f"{described(key)} ({cause})"
                                                           for key, cause in failures.items()) + "."
    return text


def int8_sweep():
    """The sentence on equalization's migration strength: logit SQNR of the default int8 graph and the Edge TPU form
    (min/max ranges, outlier channels) at each strength of the sweep."""
    result = load("int8_outliers")
    pairs = [f"{row['sqnr_db']['default int8']:.1f} / {row['sqnr_db']['Edge TPU form']:.1f}" for row in result["sweep"]]
    strengths = [f"{row['strength']:g}" for row in result["sweep"]]
    return (f"On injected outliers the sweep is flat (logit SQNR of the default int8 / Edge TPU form with min/max "
            f"ranges at α = {', '.join(strengths[:-1])} and {strengths[-1]}: {', '.join(pairs[:-1])} and {pairs[-1]} "
            f"dB; "
            f"`{result['command']}`).")


FIGURES = {function.__name__: function for function in (
    install, demo, peer_summary, benchmark, family_latency, edgetpu_forms, edgetpu_digits, edgetpu_families,
    int8_outliers, int8_outliers_headline, int8_sweep, train_backends, train_summary, digits_training, train_gelu,
    train_phases, input_pipeline, export_memory, train_gpu, gpu_baseline)}


def pages():
    for pattern in PAGES:
        yield from sorted(ROOT.glob(pattern))


def render(page_text, page_name="page", only=None):
    """The page with every region (or those of the renderers in `only`) rendered from its source; a region naming no
    renderer is an error."""
    def one(match):
        name, indent = match["name"], match["indent"]
        if name not in FIGURES:
            raise KeyError(f"{page_name}: no figures renderer named {name!r} (known: {', '.join(FIGURES)})")
        if only and name not in only:
            return match[0]
        lines = FIGURES[name](*match["args"].split()).split("\n")
        # blank lines around the figures: a table or paragraph glued to a comment line renders wrong
        body = "".join(f"{indent}{line}\n" if line else "\n" for line in ["", *lines, ""])
        return f"{indent}<!-- figures: {name}{match['args']} -->\n{body}{indent}<!-- /figures -->"

    return REGION.sub(one, page_text)


def stale():
    """(page, region name) of every region whose text differs from what its result file renders."""
    found = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        rendered = render(text, page.relative_to(ROOT))
        if rendered != text:
            old, new = list(REGION.finditer(text)), list(REGION.finditer(rendered))
            found += [(str(page.relative_to(ROOT)), a["name"] + a["args"]) for a, b in zip(old, new)
                      if a["body"] != b["body"]]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("renderers", nargs="*", help="rewrite only these renderers' regions (default: all)")
    parser.add_argument("--check", action="store_true", help="only list the regions that differ from their source")
    args = parser.parse_args()
    if args.check:
        found = stale()
        for page, region in found:
            print(f"{page}: region '{region}' differs from its result file")
        sys.exit(1 if found else 0)
    for page in pages():
        text = page.read_text(encoding="utf-8")
        rendered = render(text, page.relative_to(ROOT), args.renderers)
        if rendered != text:
            page.write_text(rendered, encoding="utf-8")
            print(f"rewrote {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
