"""Datasets, readers, transforms, the resumable sampler, latent statistics and the latent cache.

The dataset reader registry (``READERS``, what ``--data`` accepts): one line per reader below (name, the module
that registers it, a description). Adding a reader = a ``build`` function decorated with ``register_reader``
(``rectok_core.data.readers``) in its module + one line here. ``build_dataset`` asks every reader, by priority.
"""
from rectok_core.utils.registry import Registry

#: The dataset readers by name; entries are ``readers.Reader``.
READERS: Registry = Registry("dataset reader", option="reader")
READERS.declare("digits", "rectok_core.data.readers", "scikit-learn's 8×8 digits (the keyword 'digits')")
READERS.declare("tar", "rectok_core.data.tar", "webdataset tar shards: a folder of *.tar, a glob or one .tar")
READERS.declare("folder", "rectok_core.data.readers", "an ImageFolder tree DIR/<class>/**/<image> or a flat folder")
READERS.declare("list", "rectok_core.data.readers", "a list file LIST (lines 'path [label]') or LIST@ROOT")
