from simulators.smtp_sink.server import main

raise SystemExit(main())
