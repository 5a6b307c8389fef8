"""Environments: turning an ``--env`` value into a PufferLib vector env (``registry``), the
plug-in extension point envs register through (``plugin``), and small example envs."""
