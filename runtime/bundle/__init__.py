"""The deploy bundle's format, the one owner for writer and reader alike; it knows no backend.

In import order: :mod:`.spec` (file names, output names, the typed parts), :mod:`.precisions` (the
precision table), :mod:`.engines` (the ``engines/`` folder's format), :mod:`.sections` (the
manifest's optional sections, pure parsers), :mod:`.manifest` (``manifest.json``), :mod:`.reference`
(the reference archive), :mod:`.loader` (:func:`~.loader.load_bundle`, every check before any model
runs), :mod:`.writer` (:class:`~.writer.BundleWriter`) and :mod:`.signature` (signed bundles:
proof of origin with the optional model-signing library, checked before any model opens). Nothing
here imports a backend, TensorRT or a DeepStream writer: those read the bundle from the layers above.
"""
