"""Built-in search strategies; importing this package registers them (one module each)."""

from prunet.search.strategies import growefficient as _growefficient  # noqa: F401
from prunet.search.strategies import prdarts as _prdarts  # noqa: F401
from prunet.search.strategies import prunet as _prunet  # noqa: F401
from prunet.search.strategies import random_control as _random_control  # noqa: F401
from prunet.search.strategies import repnas as _repnas  # noqa: F401
