import sys

from services.accounts.server import SPEC
from services.runtime.server import run

sys.exit(run(SPEC))
