from services.search.app import main
from shared import runtime

if __name__ == "__main__":
    runtime.run(main)
