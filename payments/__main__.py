from payments.bootstrap import main

raise SystemExit(main())
