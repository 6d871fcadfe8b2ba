from oauthd.cli import main

raise SystemExit(main())
