"""Running a bundle on images: :mod:`.classify` (files → top-k labels) and :mod:`.bench` (latency, throughput)."""
