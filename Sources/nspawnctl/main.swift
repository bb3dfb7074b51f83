import NspawnCLI
await NspawnCommand.run()
