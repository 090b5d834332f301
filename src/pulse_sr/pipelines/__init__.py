"""Pipelines: the only library code that reads and writes files.

Each wires a :class:`pulse_sr.PulseModel` to the search core for one command,
and applies the process-wide switches (:func:`pulse_sr.runtime.tune`) once:

* :mod:`.upsample` -- ``pulse upsample``: LR images in, HR images and ``report.json`` out;
* :mod:`.align` -- ``pulse align``: photos (files or folders) in, aligned crops out;
* :mod:`.demo` -- ``pulse demo``: a sampled face and a real photo, several seeds each;
* :mod:`.eval` -- ``pulse eval``: the paper's experiments, resumable.
"""
