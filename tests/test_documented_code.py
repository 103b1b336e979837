"""Tested documentation: every Python block and shell command of the README, the docs pages, the deployment READMEs
and the examples' usage lines runs as written — small and offline (docs/reliability.md, "Tested documentation").

A block runs in a scratch folder holding the files the docs assume the reader has (`photos/`, a class-folder tree,
and a few loose images), with the substitutions of `SMALL` (fewer epochs and steps, smaller images and models, no
download). A block that needs what this machine does not have carries a mark just above it in the Markdown:

    <!-- docs-test: download expect="WeightsError: could not download" -->   runs offline as written first: its
                                        first statement or command must end with that one-line error; then it runs
                                        with the OFFLINE substitutions too (no pretrained weights, digits for tfds)
    <!-- docs-test: hosts expect="waiting for all hosts" -->   a second host: says what it waits for, then is stopped
    <!-- docs-test: device -->          a phone or an Edge TPU: parsed (bash -n), not run; with expect="...", it runs
                                        and must end with that one-line error
    <!-- docs-test: slow -->            runs with `python -m pytest -m slow` only
    <!-- docs-test: slow-download expect="..." -->   a download that takes minutes to fail offline (tfds retries)

and `<!-- docs-test-setup python|bash ... -->` holds code that prepares what later blocks of the page take as given
(`model`, `x_train`, ...), shown in the page's source only. Installation lines (`pip install`, `python3 -m venv`)
are not run (CI runs them): the extras they name must exist in pyproject.toml.
"""

import os
import re
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_folders import make_image_folders

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
             "deploy/README.md", "android_demo/README.md"]

# Small sizes: the same commands, seconds instead of hours.
SMALL = [
    (r"--epochs \d+", "--epochs 1"), (r"\bepochs=\d+", "epochs=1"), (r"--qat-epochs \d+", "--qat-epochs 1"),
    (r"--steps \d+", "--steps 2"), (r"\bsteps=[\d_]+", "steps=2"),
    (r"--batch-size \d+", "--batch-size 8"), (r"\bbatch_size=\d+", "batch_size=8"),
    (r"--image-size 224", "--image-size 32"),
    (r"(keras-mixer benchmark --models)( mixer_\w+)+", r"\1 mixer_tiny"), (r"--runs \d+", "--runs 2"),
    (r"--batch-sizes [\d ]+", "--batch-sizes 1 "), (r"--threads [\d ]+", "--threads 1 "),
    # on the reader's photos/, a small Mixer of their 3 classes: a whole train -> qat -> export chain of mixer_s16 took
    # a third more time, in its 19 M parameters' conversions
    (r"(keras-mixer train --model) mixer_b16( --dataset photos/)", r"\1 small.keras\2"),
    (r"(keras-mixer train --model) mixer_b16", r"\1 mixer_s16"), (r'train\("mixer_b16"', 'train("mixer_s16"'),
]
# Offline: no pretrained weights, and the offline digits instead of a tfds download.
OFFLINE = [
    (r"\s*--weights imagenet\b", ""),
    (r"\bweights=\"(imagenet\w*|[\w.]+\.pth)\",\s*", ""), (r",?\s*\bweights=\"(imagenet\w*|[\w.]+\.pth)\"", ""),
    (r"\s*--download\b", ""), (r"\b(cifar10|imagenette)\b", "digits"),
]
# The examples are Python files: their usage lines carry no Markdown mark, so their marks live here, with the
# example's own flags that make it small and offline where its defaults need a download.
EXAMPLE_MARKS = {
    # offline, tfds retries its download for about 3.5 minutes before failing: slow
    "--weights imagenet --dataset cifar10": ("slow-download", "finetune.py: error: tfds could not download",
                                             " --weights '' --model mixer_s16 --image-size 32 --batch-size 8"),
    "--strategy mirrored": ("slow-download", "multi_gpu_and_tpu.py: error: tfds could not download",
                            " --dataset digits --epochs 1"),
    "--strategy data_parallel\n": ("slow-download", "multi_gpu_and_tpu.py: error: tfds could not download",
                                   " --dataset digits --epochs 1"),
    "--weights '' --dataset digits": ("slow", None, ""),  # train + int8 export: the CLI tests cover both by default
    "--strategy tpu": ("device", "multi_gpu_and_tpu.py: error: no TPU found", ""),
    "--coordinator": ("hosts", "waiting for all hosts to join the coordinator", ""),
}
MARK = re.compile(r'<!--\s*docs-test:\s*([\w-]+)(?:\s+expect="([^"]*)")?\s*-->\s*$')
SETUP = re.compile(r"<!--\s*docs-test-setup (python|bash)\n(.*?)-->", re.S)
FENCE = re.compile(r"^( *)```(python|bash)\n(.*?)^\1```", re.S | re.M)
INSTALL = re.compile(r"^(\.venv/bin/)?(pip|python3? -m (venv|pip))\b")


@dataclass
class Block:
    where: str          # "docs/training.md:11"
    language: str       # python | bash
    code: str
    mark: str = "run"   # run | download | hosts | device | slow | slow-download
    expect: str = None
    setup: list = field(default_factory=list)  # (language, code) from the page's setup comments above the block
    offline: list = field(default_factory=list)  # the block's own substitutions for its offline run
    after_demo: bool = False  # takes the README's demo run (runs/demo/) as given: the test run's shared one

    def __str__(self):
        return self.where


def markdown_blocks(name):
    text = (ROOT / name).read_text()
    blocks = []
    for match in FENCE.finditer(text):
        indent, language, body = match.groups()
        code = "\n".join(line[len(indent):] for line in body.splitlines())
        before = text[:match.start()]
        mark = MARK.search(before)
        setup = [(m.group(1), textwrap.dedent(m.group(2))) for m in SETUP.finditer(before)]
        line = before.count("\n") + 1
        kind, expect = (mark.group(1), mark.group(2)) if mark else ("run", None)
        blocks.append(Block(f"{name}:{line}", language, code, kind, expect, setup))
    return blocks


def example_blocks():
    blocks = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        docstring = re.sub(r"\\+\n\s*", " ", path.read_text().split('"""')[1])  # continuation lines joined
        for command in re.findall(r"(?:KERAS_BACKEND=\w+ )?python examples/.*", docstring):
            command = command.split("  #")[0].strip()
            kind, expect, offline = next((mark for key, mark in EXAMPLE_MARKS.items() if key in command + "\n"),
                                         ("run", None, ""))
            blocks.append(Block(f"examples/{path.name}: {command[:60]}", "bash", command, kind, expect, [],
                                [(r"$", offline)] if offline else [], after_demo="runs/demo/" in command))
    return blocks


def all_blocks():
    """Every block once: a page that repeats another's commands (the README's own-images commands are
    docs/own-images.md's) is covered by the first."""
    blocks, seen = [], set()
    for block in [block for name in DOCUMENTS for block in markdown_blocks(name)] + example_blocks():
        commands = shell_commands(block.code) if block.language == "bash" else block.code.splitlines()
        key = (block.language, block.mark, tuple(re.sub(r"\s+", " ", command) for command in commands))
        if key not in seen:
            seen.add(key)
            blocks.append(block)
    return blocks


def substitute(code, rules):
    for pattern, replacement in rules:
        code = re.sub(pattern, replacement, code)
    return code


def shell_commands(code):
    """The block's commands: continuation lines joined, comments and installation lines dropped."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if line and not INSTALL.match(line):
            commands.append(line)
    return commands


def installed_extras(code):
    return {extra for line in code.splitlines() if INSTALL.match(line.strip())
            for group in re.findall(r'"\.\[([\w,]+)\]"', line) for extra in group.split(",")}


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """What the docs assume the reader has: a photo folder of their own classes and loose images."""
    from keras_mixer.models.mlp_mixer import build_digits_mixer

    root = tmp_path_factory.mktemp("reader")
    make_image_folders(root / "photos", per_class=12)
    build_digits_mixer(classes=3).save(root / "small.keras")  # SMALL's stand-in for a model trained on photos/
    rng = np.random.default_rng(0)
    for name, size in (("cat.jpg", (300, 200)), ("IMG_0042.jpg", (120, 90)), ("IMG_0043.png", (64, 80))):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / name)
    return root


def scratch_folder(user_files, tmp_path):
    for item in user_files.iterdir():
        (tmp_path / item.name).symlink_to(item)
    for name in ("examples", "benchmarks", "export"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "android_demo/app/src/main/assets").mkdir(parents=True)
    return tmp_path


def environment(tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "2",
            # offline for sure, and at once: every download goes to a closed local port
            "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost",
            "KERAS_MIXER_WEIGHTS_DIR": str(tmp_path / "weights"), "TFDS_DATA_DIR": str(tmp_path / "tfds"),
            "KERAS_HOME": str(tmp_path / "keras_home"), "MPLBACKEND": "Agg"}


def run(language, code, cwd, timeout=900):
    if language == "python":
        (cwd / "block.py").write_text(code)
        argv = [sys.executable, "block.py"]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", code]
    return subprocess.run(argv, cwd=cwd, env=environment(cwd), capture_output=True, text=True, timeout=timeout)


def script(block, rules):
    """The block's code after `rules`, with the page's setup code first."""
    parts = [code for language, code in block.setup if language == block.language]
    body = substitute(block.code, rules)
    parts.append(body if block.language == "python" else "\n".join(shell_commands(body)))
    return "\n".join(parts)


def first_statement(block):
    """As written, up to the end of the first statement that needs the missing resource (after the page's setup)."""
    setup = [code for language, code in block.setup if language == block.language]
    if block.language == "bash":
        return "\n".join(setup + shell_commands(block.code)[:1])
    lines = block.code.splitlines()
    end = next(i for i, line in enumerate(lines) if re.search(r"weights=\"(imagenet|[\w.]+\.pth)|download=True", line))
    depth = lambda line: line.split("#")[0].count("(") - line.split("#")[0].count(")")
    while sum(depth(line) for line in lines[:end + 1]) > 0:  # to the statement's closing parenthesis
        end += 1
    return "\n".join(setup + lines[:end + 1])


def one_line_error(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


BLOCKS = all_blocks()


def params(kinds):
    return [pytest.param(block, id=str(block), marks=[pytest.mark.slow] if block.mark.startswith("slow") else [])
            for block in BLOCKS if block.mark in kinds]


def setup_only(block):
    return [(language, code) for language, code in block.setup if language != block.language]


def run_setup(block, cwd):
    for language, code in setup_only(block):
        result = run(language, code, cwd)
        assert result.returncode == 0, f"{block} setup failed:\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("block", params({"run", "slow"}))
def test_block_runs(block, user_files, tmp_path, request):
    cwd = scratch_folder(user_files, tmp_path)
    if block.after_demo:  # the examples come last here: test_export, first on the other worker, started the demo
        demo, result = request.getfixturevalue("demo_run")
        assert result["returncode"] == 0, f"the demo failed:\n{result['stderr'][-3000:]}"
        (cwd / "runs").mkdir()
        (cwd / "runs" / "demo").symlink_to(demo)
    run_setup(block, cwd)
    code = script(block, SMALL)
    if not code.strip():
        pytest.skip("installation lines only (CI runs them)")
    result = run(block.language, code, cwd)
    assert result.returncode == 0, f"{block}:\n{code}\n---\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


@pytest.mark.parametrize("block", params({"download", "slow-download"}))
def test_block_needing_a_download(block, user_files, tmp_path):
    cwd = scratch_folder(user_files, tmp_path)
    run_setup(block, cwd)
    written = run(block.language, first_statement(block), cwd)
    assert written.returncode != 0 and block.expect in one_line_error(written), \
        f"{block} offline, as written: expected one line with {block.expect!r}, got:\n{written.stderr[-3000:]}"
    result = run(block.language, script(block, block.offline + OFFLINE + SMALL), cwd)
    assert result.returncode == 0, f"{block} offline:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"


@pytest.mark.parametrize("block", params({"hosts"}))
def test_block_needing_a_second_host_says_what_it_waits_for(block, user_files, tmp_path):
    cwd = scratch_folder(user_files, tmp_path)
    process = subprocess.Popen(["bash", "-c", "exec env " + shell_commands(block.code)[0]], cwd=cwd,
                               env=environment(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    for line in process.stdout:  # the first lines, until it says what it waits for (or ends)
        output += line
        if block.expect in line:
            break
    process.kill()
    process.wait()
    assert block.expect in output, f"{block}:\n{output[-3000:]}"


@pytest.mark.parametrize("block", params({"device"}))
def test_block_needing_a_device(block, user_files, tmp_path):
    assert block.language == "bash"
    if block.expect is None:
        result = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return
    result = run("bash", shell_commands(block.code)[0], scratch_folder(user_files, tmp_path))
    assert result.returncode != 0 and block.expect in one_line_error(result), f"{block}:\n{result.stderr[-3000:]}"


def test_installation_lines_name_existing_extras():
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named = {extra for block in BLOCKS if block.language == "bash" for extra in installed_extras(block.code)}
    assert named and named <= extras, named - extras


def test_every_document_is_covered():
    """A new page's blocks are collected without registering it; a mark nobody reads is a typo."""
    assert {block.where.split(":")[0] for block in BLOCKS} >= {"README.md", "docs/training.md", "examples/finetune.py"}
    for name in DOCUMENTS:
        text = (ROOT / name).read_text()
        for mark in re.findall(r"<!--\s*docs-test:.*?-->", text):
            assert MARK.search(mark + "\n"), f"{name}: unreadable mark {mark}"
            assert MARK.search(mark).group(1) in {"download", "slow-download", "hosts", "device", "slow"}, mark
