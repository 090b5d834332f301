"""``python -m pulse_sr ...`` is ``pulse ...``; it is also what ``torchrun -m pulse_sr ...`` runs."""

from pulse_sr.cli import main

if __name__ == "__main__":
    main(prog_name="pulse")
