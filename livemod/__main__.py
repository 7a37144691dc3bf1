from livemod.cli import main

raise SystemExit(main())
