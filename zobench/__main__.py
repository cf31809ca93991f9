from zobench.run import cli

cli()
