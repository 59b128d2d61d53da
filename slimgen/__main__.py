from slimgen.cli import main

main()
