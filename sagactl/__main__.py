from sagactl.cli import main

raise SystemExit(main())
