"""pbn: learn painters' hands and tell whether two paintings share an artist.

>>> import pbn_cli as pbn
>>> model = pbn.load(workspace="workspace")            # doctest: +SKIP
>>> model.compare("a.jpg", "b.jpg").words              # doctest: +SKIP
'same artist'

The public names (pbn_cli/api, docs/api.md) are imported when first used, so
``import pbn_cli`` stays cheap: nothing of torch until a model is loaded.
"""

from pbn_cli.api import __all__, __getattr__  # noqa: F401  the public names and their lazy import
from pbn_cli.core.version import VERSION as __version__


def __dir__():
    return sorted([*globals(), *__all__])
