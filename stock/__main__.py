from stock.bootstrap import main

raise SystemExit(main())
