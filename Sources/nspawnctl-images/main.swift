import NspawnImageCommands
await NspawnctlImages.main()
