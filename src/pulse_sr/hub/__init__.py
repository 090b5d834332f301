"""Where models come from: the registry of known weights (:mod:`.registry`) and
resumable, checksum-verified downloads (:mod:`.download`). Neither imports torch."""
