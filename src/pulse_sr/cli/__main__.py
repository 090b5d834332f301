from pulse_sr.cli import main

main()
