"""TFLite model metadata (the `TFLITE_METADATA` flatbuffer that Android's LiteRT support library and Task library
read): model name and description, the input's image properties and normalization, and the labels file of the
output, packed into the `.tflite` as an appended zip as the metadata populator does.

Written with the `flatbuffers` builder from the published metadata schema (tflite-support's
metadata_schema.fbs, file identifier "M001"); tflite-support's own writer requires protobuf < 4 and cannot be
installed beside TensorFlow 2.21. Table fields are addressed by their slot (declaration order; a union takes two).
"""

import io
import os
import zipfile

import flatbuffers
import numpy as np
from flatbuffers import number_types, table

from keras_mixer.errors import ExportError
from keras_mixer.export.flatbuffer import pack_model, schema
from keras_mixer.io_utils import atomic_path

METADATA_NAME = b"TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
# the output tensor's metadata name and description, by whether the head ends in a softmax
OUTPUT_KINDS = {False: ("logits", "one logit per class (softmax gives probabilities)"),
                True: ("probability", "one probability per class (softmax)")}
# enum and union values of the schema
TENSOR_AXIS_LABELS = 2
# ColorSpaceType by the input's channel count (UNKNOWN for any other count): a 1-channel model's file said RGB
COLOR_SPACES = {3: ("RGB", 1), 1: ("GRAYSCALE", 2)}
CONTENT_IMAGE_PROPERTIES = 2
CONTENT_FEATURE_PROPERTIES = 1
PROCESS_UNIT_NORMALIZATION = 1


class _Writer:
    def __init__(self):
        self.builder = flatbuffers.Builder(1024)

    def string(self, text):
        return self.builder.CreateString(text)

    def vector(self, offsets):
        b = self.builder
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    def floats(self, values):
        return self.builder.CreateNumpyVector(np.asarray(values, np.float32))

    def table(self, fields):
        """fields: {slot: ("offset" | "byte" | "uint", value)}, values already created."""
        b = self.builder
        b.StartObject(max(fields) + 1 if fields else 0)
        for slot, (kind, value) in sorted(fields.items()):
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            elif kind == "byte":
                b.PrependUint8Slot(slot, value, 0)
            else:
                b.PrependUint32Slot(slot, value, 0)
        return b.EndObject()


def build_metadata(name, description, mean, std, image_size, has_labels, probabilities=False, channels=3):
    """The ModelMetadata flatbuffer (bytes) for an image classifier with one input and one output."""
    w = _Writer()
    labels = None
    if has_labels:
        labels = w.table({0: ("offset", w.string(LABELS_FILE)), 1: ("offset", w.string("class names, one per line")),
                          2: ("byte", TENSOR_AXIS_LABELS)})
    # input: an image (RGB for keras_mixer's models) normalized as (x - mean) / std
    color_space, color_space_value = COLOR_SPACES.get(channels, (f"{channels}-channel", 0))
    size = w.table({0: ("uint", image_size[1]), 1: ("uint", image_size[0])})
    image = w.table({0: ("byte", color_space_value), 1: ("offset", size)})
    image_content = w.table({0: ("byte", CONTENT_IMAGE_PROPERTIES), 1: ("offset", image)})
    normalization = w.table({0: ("offset", w.floats(mean)), 1: ("offset", w.floats(std))})
    unit = w.table({0: ("byte", PROCESS_UNIT_NORMALIZATION), 1: ("offset", normalization)})
    meaning = (f"{color_space} image {image_size[0]}x{image_size[1]}, pixels in [0, 255] normalized as "
               "(x - mean) / std")
    input_meta = w.table({0: ("offset", w.string("image")), 1: ("offset", w.string(meaning)),
                          3: ("offset", image_content), 4: ("offset", w.vector([unit]))})
    # output: one score per class, labelled by labels.txt
    feature = w.table({})
    feature_content = w.table({0: ("byte", CONTENT_FEATURE_PROPERTIES), 1: ("offset", feature)})
    # the output's name says what its scores are, so that readers (predict, the Android app) need not guess
    kind, meaning = OUTPUT_KINDS[bool(probabilities)]
    output_fields = {0: ("offset", w.string(kind)), 1: ("offset", w.string(meaning)),
                     3: ("offset", feature_content)}
    if labels is not None:
        output_fields[6] = ("offset", w.vector([labels]))
    output_meta = w.table(output_fields)
    subgraph = w.table({2: ("offset", w.vector([input_meta])), 3: ("offset", w.vector([output_meta]))})
    model = w.table({0: ("offset", w.string(name)), 1: ("offset", w.string(description)),
                     3: ("offset", w.vector([subgraph])), 7: ("offset", w.string(MIN_PARSER_VERSION))})
    w.builder.Finish(model, file_identifier=FILE_IDENTIFIER)
    return bytes(w.builder.Output())


def add_metadata(path, name, description, mean=(127.5,), std=(127.5,), labels=None, probabilities=False):
    """Embeds metadata (and `labels`, a list of class names, as labels.txt) into the `.tflite` at `path`,
    replacing any metadata it had. The output is named "probability" if `probabilities` (a softmax head), else
    "logits". Written atomically."""
    tflite = schema()
    path = os.fspath(path)
    data = open(path, "rb").read()
    model = tflite.ModelT.InitFromPackedBuf(data, 0)
    graph = model.subgraphs[0]
    image_shape = graph.tensors[graph.inputs[0]].shape
    image_size, channels = tuple(int(d) for d in image_shape[1:3]), int(image_shape[-1])
    classes = int(graph.tensors[graph.outputs[0]].shape[-1])
    check_labels(labels, classes)
    blob = build_metadata(name, description, mean, std, image_size, labels is not None, probabilities, channels)
    model.metadata = [m for m in (model.metadata or []) if m.name != METADATA_NAME]
    buffer = tflite.BufferT()
    buffer.data = np.frombuffer(blob, np.uint8)
    model.buffers.append(buffer)
    entry = tflite.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata.append(entry)
    flatbuffer = pack_model(model)
    # TFLite's converter stores the weights of a model near 2 GB after the flatbuffer ("buffer_location"): buffers
    # with an offset from the file's start (Mixer-H/14's float32 graph). Packed again, the flatbuffer ends elsewhere:
    # the weights are copied after it and their offsets shifted by as much (by a multiple of 64: alignment kept)
    external = [buffer for buffer in model.buffers if (buffer.offset or 0) > 1]
    if external:
        start, end = min(b.offset for b in external), max(b.offset + b.size for b in external)
        shift = len(flatbuffer) + (start - len(flatbuffer)) % 64 - start
        for buffer in external:
            buffer.offset += shift
        length = len(flatbuffer)
        flatbuffer = pack_model(model)
        if len(flatbuffer) != length:  # offsets are fixed-size fields: a shift cannot change the packed length
            raise ExportError(f"{path}: its flatbuffer changed size when its weights' offsets moved")
        weights = memoryview(data)[start:end]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(flatbuffer)
            if external:
                f.write(bytes(start + shift - len(flatbuffer)))
                f.write(weights)
        if labels is not None:
            with zipfile.ZipFile(tmp, "a") as archive:  # appended after the flatbuffer, offsets from file start
                archive.writestr(LABELS_FILE, "".join(f"{label}\n" for label in labels))
    return path


def _table(buf, position):
    return table.Table(buf, position)


def _field(tab, slot):
    offset = tab.Offset(4 + 2 * slot)
    return offset or None


def _string(tab, slot):
    offset = _field(tab, slot)
    return tab.String(offset + tab.Pos).decode("utf-8") if offset else None


def _subtable(tab, slot):
    offset = _field(tab, slot)
    return _table(tab.Bytes, tab.Indirect(offset + tab.Pos)) if offset else None


def _vector_tables(tab, slot):
    offset = _field(tab, slot)
    if not offset:
        return []
    start, length = tab.Vector(offset), tab.VectorLen(offset)
    return [_table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(length)]


def _floats(tab, slot):
    offset = _field(tab, slot)
    return tab.GetVectorAsNumpy(number_types.Float32Flags, offset).tolist() if offset else []


def _byte(tab, slot):
    offset = _field(tab, slot)
    return tab.Get(number_types.Uint8Flags, offset + tab.Pos) if offset else 0


def check_labels(labels, classes):
    """ExportError unless `labels` is None or a list of `classes` class names, each a non-empty one-line string
    (labels.txt holds one per line: a name with a line break would shift every name after it)."""
    if labels is None:
        return
    if isinstance(labels, (str, bytes, os.PathLike)):
        raise ExportError(f"labels must be a list of class names, got {type(labels).__name__} "
                          f"{os.fspath(labels)[:60]!r}: read a label file with keras_mixer.export.read_labels")
    labels = list(labels)
    if len(labels) != classes:
        raise ExportError(f"{len(labels)} labels for a model with {classes} outputs")
    bad = next((label for label in labels if not isinstance(label, str) or not label.strip()
                or len(label.splitlines()) != 1 or "\x00" in label), None)
    if bad is not None:
        raise ExportError(f"labels must be non-empty one-line strings (labels.txt holds one per line), got {bad!r}")


def read_labels(path, classes=None):
    """Class names from a UTF-8 text file, one per line; ExportError if the file is missing, not UTF-8 text,
    has empty names, or (given `classes`) a different count than the model's outputs."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            text = file.read().decode("utf-8")
    except OSError as error:
        raise ExportError(f"label file {path!r} cannot be read ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise ExportError(f"label file {path!r} is not UTF-8 text (byte {error.start})") from error
    labels = text.splitlines()
    if "\x00" in text or any(not label.strip() for label in labels) or not labels:
        raise ExportError(f"label file {path!r} must hold one non-empty class name per line")
    if classes is not None and len(labels) != classes:
        raise ExportError(f"label file {path!r} has {len(labels)} names, the model {classes} outputs")
    return labels


def read_metadata(path):
    """The metadata embedded by `add_metadata`, as a dict (name, description, mean, std, image_size as
    (height, width), labels)."""
    try:
        data = open(path, "rb").read()
    except OSError as error:
        raise ExportError(f"{path}: cannot read the .tflite file ({error.strerror or error})") from error
    try:
        model = schema().Model.GetRootAs(data, 0)
        entries = {model.Metadata(i).Name(): model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
        if METADATA_NAME not in entries:
            raise ExportError(f"{path}: no TFLite metadata")
        blob = model.Buffers(entries[METADATA_NAME]).DataAsNumpy().tobytes()
        if blob[4:8] != FILE_IDENTIFIER:
            raise ExportError(f"{path}: metadata buffer is not a metadata flatbuffer (identifier {blob[4:8]!r})")
        root = _table(blob, flatbuffers.encode.Get(number_types.UOffsetTFlags.packer_type, blob, 0))
        subgraph = _vector_tables(root, 3)[0]
        tensor_in, tensor_out = _vector_tables(subgraph, 2)[0], _vector_tables(subgraph, 3)[0]
        image = _subtable(_subtable(tensor_in, 3), 1)
        size = _subtable(image, 1)
        normalization = _subtable(_vector_tables(tensor_in, 4)[0], 1)
        files = [(_string(f, 0), _byte(f, 2)) for f in _vector_tables(tensor_out, 6)]
        metadata = {
            "name": _string(root, 0),
            "description": _string(root, 1),
            "min_parser_version": _string(root, 7),
            "input": _string(tensor_in, 0),
            "color_space": {value: space for space, value in COLOR_SPACES.values()}.get(_byte(image, 0), "UNKNOWN"),
            "image_size": (size.Get(number_types.Uint32Flags, size.Offset(6) + size.Pos),
                           size.Get(number_types.Uint32Flags, size.Offset(4) + size.Pos)),
            "mean": _floats(normalization, 0),
            "std": _floats(normalization, 1),
            "output": _string(tensor_out, 0),
            "labels": None,
        }
    except ExportError:
        raise
    except Exception as error:  # a damaged flatbuffer fails anywhere in the accessors (offsets, UTF-8, sizes)
        raise ExportError(f"{path}: damaged TFLite metadata ({type(error).__name__}: {error})") from error
    label_files = [name for name, kind in files if kind == TENSOR_AXIS_LABELS]
    if label_files:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                metadata["labels"] = archive.read(label_files[0]).decode("utf-8").splitlines()
        except Exception as error:  # the labels ride in a zip appended to the flatbuffer
            raise ExportError(f"{path}: damaged label file in the metadata ({type(error).__name__}: {error})") from error
    return metadata
