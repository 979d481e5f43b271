"""Open vocabulary on the device: class names chosen after export, scored with the bundle's text tower.

In import order: :mod:`.text_clean` and :mod:`.tokenizer` (open_clip's tokenizer, torch-free),
:mod:`.text_model` (``text.onnx`` → class embeddings), :mod:`.class_list` (the class-name rules),
:mod:`.open_vocab` (``classify --classes``), :mod:`.relabel_raw` and :mod:`.relabel` (``ringfold relabel``).
"""
