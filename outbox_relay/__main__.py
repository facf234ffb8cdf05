from outbox_relay.bootstrap import main

raise SystemExit(main())
