"""The deploy bundle's format, the one owner for writer and reader alike; it knows no backend.

In import order: :mod:`.spec` (file names, output names, the typed parts), :mod:`.precisions` (the
precision table), :mod:`.engines` (the ``engines/`` folder's format), :mod:`.sections` (the
manifest's optional sections, pure parsers), :mod:`.manifest` (``manifest.json``), :mod:`.reference`
(the reference archive), :mod:`.loader` (:func:`~.loader.load_bundle`, every check before any model
runs) and :mod:`.writer` (:class:`~.writer.BundleWriter`). Nothing here imports a backend, TensorRT
or a DeepStream writer: those read the bundle from the layers above.
"""
