"""The run folder's format in one place: its file names (``layout``), how it is written (``writer``) and how
a folder someone else made is read back, leniently and as untrusted input (``reader``).

This package imports nothing at package level so that low modules (``core.heartbeat``, ``core.resume``) can
take their file names from ``runfolder.layout`` without an import cycle through the reader.
"""
