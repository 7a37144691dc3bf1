from livemod.app.cli import main

raise SystemExit(main())
