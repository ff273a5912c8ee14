from runequeue.cli import main

main()
