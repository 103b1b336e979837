"""Derives the ImageNet label files shipped in keras_mixer/data (run once; the outputs are committed).

Sources (read from installed packages or from their wheels, so torch is not needed):
  - tensorflow-datasets: datasets/imagenet2012/labels.txt — the 1,000 synset ids in class-index order;
  - timm: data/_info/imagenet21k_goog_synsets.txt — the 21,843 synsets in the order of Google's ImageNet-21k heads,
          data/_info/imagenet_synset_to_lemma.txt — synset -> human-readable lemmas.

    pip download --no-deps timm tensorflow-datasets -d wheels/
    python scripts/make_labels.py --timm wheels/timm-*.whl --tfds wheels/tensorflow_datasets-*.whl
"""

import argparse
import gzip
import importlib.util
import os
import tempfile
import zipfile
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent.parent / "keras_mixer" / "data"


def read_member(source, package, member):
    """Text of `package/member` from a wheel file, or from the installed package when `source` is None."""
    if source and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(f"{package}/{member}").decode("utf-8")
    root = Path(source) if source else Path(importlib.util.find_spec(package).submodule_search_locations[0])
    return (root / member).read_text(encoding="utf-8")


def write_labels(path, synsets, lemmas):
    missing = [s for s in synsets if s not in lemmas]
    if missing:
        raise SystemExit(f"{len(missing)} synsets have no lemma, e.g. {missing[:3]}")
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write("".join(f"{s}\t{lemmas[s]}\n" for s in synsets).encode("utf-8"))
    os.replace(tmp, path)
    print(f"wrote {path} ({len(synsets)} classes, {path.stat().st_size} bytes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timm", help="timm wheel or package directory (default: the installed package)")
    parser.add_argument("--tfds", help="tensorflow-datasets wheel or package directory (default: installed)")
    args = parser.parse_args()

    in1k = read_member(args.tfds, "tensorflow_datasets", "datasets/imagenet2012/labels.txt").split()
    in21k = read_member(args.timm, "timm", "data/_info/imagenet21k_goog_synsets.txt").split()
    lemma_lines = read_member(args.timm, "timm", "data/_info/imagenet_synset_to_lemma.txt").splitlines()
    lemmas = dict(line.split("\t", 1) for line in lemma_lines if line.strip())
    if len(in1k) != 1000 or len(in21k) != 21843:
        raise SystemExit(f"unexpected class counts: {len(in1k)} (1k), {len(in21k)} (21k)")
    timm_in1k = read_member(args.timm, "timm", "data/_info/imagenet_synsets.txt").split()
    if timm_in1k != in1k:
        raise SystemExit("tfds and timm disagree on the ImageNet-1k class order")
    write_labels(OUT_DIR / "imagenet1k_labels.tsv.gz", in1k, lemmas)
    write_labels(OUT_DIR / "imagenet21k_labels.tsv.gz", in21k, lemmas)


if __name__ == "__main__":
    main()
