import sys

from services.points.server import SPEC
from services.runtime.server import run

sys.exit(run(SPEC))
