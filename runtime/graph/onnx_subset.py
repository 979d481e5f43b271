"""Just enough of ONNX's protobuf schema to rewrite a model's head without the ``onnx`` package.

A device has onnxruntime, and onnxruntime requires ``protobuf``, but not ``onnx``.
This module declares the few ONNX message fields ``relabel`` reads or writes
(graph nodes, initializers, outputs, value_info, tensor dims/type/data, shapes)
with their numbers from ``onnx.proto``, in a private descriptor pool. Every
other field of a parsed model is kept by protobuf as an unknown field and
written back byte for byte, so what this schema does not name survives a
round trip (tests re-parse the result with the real ``onnx`` package and run its
full checker).
"""

from __future__ import annotations

from functools import lru_cache

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "ringfold_onnx_subset"

#: message -> [(field, number, type, label, message type or None, oneof index or None)]
_SCHEMA: dict[str, list[tuple]] = {
    "ModelProto": [("graph", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "GraphProto", None)],
    "GraphProto": [
        ("node", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "NodeProto", None),
        ("initializer", 5, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "TensorProto", None),
        ("output", 12, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "ValueInfoProto", None),
        ("value_info", 13, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "ValueInfoProto", None),
    ],
    "NodeProto": [
        ("input", 1, _F.TYPE_STRING, _F.LABEL_REPEATED, None, None),
        ("output", 2, _F.TYPE_STRING, _F.LABEL_REPEATED, None, None),
        ("op_type", 4, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, None),
        ("attribute", 5, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "AttributeProto", None),
    ],
    "AttributeProto": [
        ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, None),
        ("f", 2, _F.TYPE_FLOAT, _F.LABEL_OPTIONAL, None, None),
        ("i", 3, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None, None),
    ],
    "TensorProto": [
        ("dims", 1, _F.TYPE_INT64, _F.LABEL_REPEATED, None, None),
        ("data_type", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None, None),
        ("float_data", 4, _F.TYPE_FLOAT, _F.LABEL_REPEATED, None, None),
        ("int32_data", 5, _F.TYPE_INT32, _F.LABEL_REPEATED, None, None),
        ("name", 8, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, None),
        ("raw_data", 9, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, None, None),
        ("data_location", 14, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None, None),
    ],
    "ValueInfoProto": [
        ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, None),
        ("type", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TypeProto", None),
    ],
    "TypeProto": [("tensor_type", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TypeProtoTensor", 0)],
    "TypeProtoTensor": [
        ("elem_type", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None, None),
        ("shape", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "TensorShapeProto", None),
    ],
    "TensorShapeProto": [("dim", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "Dimension", None)],
    "Dimension": [
        ("dim_value", 1, _F.TYPE_INT64, _F.LABEL_OPTIONAL, None, 0),
        ("dim_param", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, 0),
    ],
}
_ONEOFS = {"TypeProto": "value", "Dimension": "value"}

#: TensorProto.DataType values relabel meets
FLOAT, INT8, FLOAT16 = 1, 3, 10
#: packed in onnx.proto
_PACKED = {("TensorProto", "float_data"), ("TensorProto", "int32_data")}


@lru_cache(maxsize=1)
def _classes() -> dict[str, type]:
    file = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2")
    for message, fields in _SCHEMA.items():
        msg = file.message_type.add(name=message)
        if message in _ONEOFS:
            msg.oneof_decl.add(name=_ONEOFS[message])
        for name, number, kind, label, type_name, oneof in fields:
            field = msg.field.add(name=name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
            if oneof is not None:
                field.oneof_index = oneof
            if (message, name) in _PACKED:
                field.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    get_class = getattr(message_factory, "GetMessageClass", None)  # protobuf ≥ 4.21
    if get_class is None:  # older protobuf (onnxruntime 1.17 accepts any)
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return {name: get_class(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _SCHEMA}


def parse_model(data: bytes):
    """A ModelProto-shaped message; raises ``google.protobuf.message.DecodeError`` on malformed bytes."""
    model = _classes()["ModelProto"]()
    model.ParseFromString(data)
    return model


def serialize(model) -> bytes:
    """The model's bytes, unknown (undeclared) fields included; deterministic for identical input."""
    return model.SerializeToString(deterministic=True)
