from orders.bootstrap import main

raise SystemExit(main())
