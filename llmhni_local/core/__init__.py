"""The core every room stands on: errors, atomic writes and hashes (``io``), progress bars, the
run-folder lock (``runlock``), the run manifest, settings parsing (``config``), where torch
runs (``device``), which precision the CPU affords (``precision``), the offline switch
(``offline``) and closing engines when the process is stopped (``closing``)."""
