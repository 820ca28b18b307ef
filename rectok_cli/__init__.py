"""The ``rectok`` command line: parse, call :mod:`rectok_core`, present."""
