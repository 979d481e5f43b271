"""Images to model inputs, torch-free: what a picture becomes before any model sees it.

- :mod:`.images` — decoding with caps (decompression bombs, odd modes), listing image files, folder labels;
- :mod:`.preprocess` — open_clip's evaluation transform in numpy + Pillow, and the one pixel normalisation;
- :mod:`.raw` — raw 0..255 pixels for the raw-input models, with open_clip's or DeepStream's geometry;
- :mod:`.synthetic` — generated pictures for numerics only (``export --synthetic-ref``), never for accuracy.
"""
