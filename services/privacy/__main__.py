import sys

from services.privacy.server import SPEC
from services.runtime.server import run

sys.exit(run(SPEC))
