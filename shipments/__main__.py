from shipments.bootstrap import main

raise SystemExit(main())
