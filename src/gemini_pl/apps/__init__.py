"""Commands for one's own images: ``gemini-pl register`` and ``gemini-pl segment``.

``grid.py`` voxel grids in world (LPS) coordinates, reading with SimpleITK, resampling;
``checkpoint.py`` a trained module and its data settings from a checkpoint; ``prepare.py`` an
image as the network expects it; ``register.py`` / ``segment.py`` the two commands;
``pictures.py`` the PNGs they write.
"""
