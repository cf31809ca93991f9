"""``python -m zobench._ext``: build (or find) the Philox library, check it, say which implementation is used."""
from zobench.optim.philox import main

main()
