from notifications.bootstrap import main

raise SystemExit(main())
