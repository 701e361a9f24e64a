"""The command line, one module per group of commands, registered explicitly in
:mod:`spdnn.cli.app`:

* :mod:`spdnn.cli.console` -- the stdout/stderr consoles;
* :mod:`spdnn.cli.netspec` -- ``merge``, ``validate``, ``inspect``, ``compile``, ``render``,
  ``ops`` (no torch);
* :mod:`spdnn.cli.deploy` -- ``export``, ``bench``;
* :mod:`spdnn.cli.train` -- ``train``, ``evaluate``, ``predict``, ``compare``;
* :mod:`spdnn.cli.demo` -- ``demo``;
* :mod:`spdnn.cli.app` -- the application and :func:`main`.
"""

from spdnn.cli.app import app, main

__all__ = ["app", "main"]
