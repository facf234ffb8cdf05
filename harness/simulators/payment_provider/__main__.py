from simulators.payment_provider.bootstrap import main

raise SystemExit(main())
