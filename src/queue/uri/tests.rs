//! The `queueURI` grammars through [`QueueUri::parse`], and redaction.

use crate::queue::{ProviderKind, QueueUri};

fn ok(s: &str) -> QueueUri {
    match QueueUri::parse(s) {
        Ok(u) => u,
        Err(e) => panic!("{s} should parse: {e}"),
    }
}

fn problem(s: &str) -> String {
    match QueueUri::parse(s) {
        Ok(u) => panic!("{s} should not parse, got {u:?}"),
        Err(e) => e.problem,
    }
}

#[test]
fn sqs_aws_host_gives_region_and_no_endpoint() {
    let QueueUri::Sqs(u) = ok("https://sqs.eu-west-1.amazonaws.com/123456789012/jobs") else {
        panic!("not sqs")
    };
    assert_eq!(u.region.as_deref(), Some("eu-west-1"));
    assert_eq!(u.endpoint, None);
    assert_eq!(u.account, "123456789012");
    assert_eq!(u.queue, "jobs");
    assert_eq!(
        u.queue_url,
        "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
    );
}

#[test]
fn sqs_china_and_legacy_hosts() {
    let QueueUri::Sqs(cn) = ok("https://sqs.cn-north-1.amazonaws.com.cn/1/q.fifo") else {
        panic!("not sqs")
    };
    assert_eq!(cn.region.as_deref(), Some("cn-north-1"));
    assert_eq!(cn.queue, "q.fifo");
    assert_eq!(cn.endpoint, None);
    let QueueUri::Sqs(legacy) = ok("https://us-west-2.queue.amazonaws.com/1/q") else {
        panic!("not sqs")
    };
    assert_eq!(legacy.region.as_deref(), Some("us-west-2"));
    let QueueUri::Sqs(oldest) = ok("https://queue.amazonaws.com/1/q") else {
        panic!("not sqs")
    };
    assert_eq!(oldest.region.as_deref(), Some("us-east-1"));
}

#[test]
fn sqs_compatible_endpoint() {
    let QueueUri::Sqs(u) = ok("http://127.0.0.1:4566/000000000000/work?region=us-east-1") else {
        panic!("not sqs")
    };
    assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:4566"));
    assert_eq!(u.region.as_deref(), Some("us-east-1"));
    assert_eq!(u.queue_url, "http://127.0.0.1:4566/000000000000/work");
    let QueueUri::Sqs(no_region) = ok("http://elasticmq:9324/queue/work") else {
        panic!("not sqs")
    };
    assert_eq!(no_region.region, None);
    assert_eq!(no_region.endpoint.as_deref(), Some("http://elasticmq:9324"));
}

#[test]
fn sqs_errors() {
    assert!(problem("https://sqs.us-east-1.amazonaws.com/123").contains("missing path"));
    assert!(problem("https://sqs.us-east-1.amazonaws.com/1/q/x").contains("extra path"));
    assert!(problem("https://sqs.us-east-1.amazonaws.com//q").contains("account"));
    assert!(problem("https://sqs.us-east-1.amazonaws.com/1/bad%20name").contains("queue name"));
    assert!(problem("https://a:b@sqs.us-east-1.amazonaws.com/1/q").contains("no credentials"));
    assert!(
        problem("https://sqs.us-east-1.amazonaws.com/1/q?region=eu-west-1").contains("contradicts")
    );
    assert!(problem("http://h/1/q?regoin=x").contains("unknown query parameter `regoin`"));
    assert!(problem("http://h/1/q?region=EU WEST").contains("bad region"));
    assert!(problem("http://h:70000/1/q").contains("invalid port"));
}

#[test]
fn amqp_defaults_and_vhosts() {
    let QueueUri::Rabbitmq(u) = ok("amqp://guest:gu%40st@rabbit/%2F/celery") else {
        panic!("not amqp")
    };
    assert!(!u.tls);
    assert_eq!(u.port, 5672);
    assert_eq!(u.vhost, "/");
    assert_eq!(u.queue, "celery");
    assert_eq!(u.username.as_deref(), Some("guest"));
    assert_eq!(u.password.as_deref(), Some("gu@st"));
    assert_eq!(u.management, None);

    let QueueUri::Rabbitmq(empty) = ok("amqps://rabbit//q") else {
        panic!("not amqp")
    };
    assert!(empty.tls);
    assert_eq!(empty.port, 5671);
    assert_eq!(empty.vhost, "/");

    let QueueUri::Rabbitmq(named) =
        ok("amqp://rabbit:5673/prod%2Feu/my%20queue?management=https://rabbit:15671/admin/")
    else {
        panic!("not amqp")
    };
    assert_eq!(named.port, 5673);
    assert_eq!(named.vhost, "prod/eu");
    assert_eq!(named.queue, "my queue");
    assert_eq!(
        named.management.as_deref(),
        Some("https://rabbit:15671/admin")
    );
}

#[test]
fn amqp_errors() {
    assert!(problem("amqp://rabbit/q").contains("missing path segment"));
    assert!(problem("amqp://rabbit/%2F/").contains("queue segment is empty"));
    assert!(problem("amqp://rabbit/%2F/a/b").contains("extra path"));
    assert!(problem("amqp:///%2F/q").contains("host"));
    assert!(problem("amqp://rabbit:0/%2F/q").contains("bad port"));
    assert!(problem("amqp://rabbit:99999/%2F/q").contains("invalid port"));
    assert!(problem("amqp://rabbit/%2F/q?management=ftp://x").contains("http or https"));
    assert!(problem("amqp://rabbit/%2F/q?management=nope").contains("not a URL"));
    assert!(problem("amqp://r/%2F/q?management=http://u:p@m:15672").contains("credentials"));
    assert!(problem("amqp://r/%2F/q?heartbeat=10").contains("unknown query parameter"));
    let long = format!("amqp://r/%2F/{}", "q".repeat(256));
    assert!(problem(&long).contains("255"));
}

#[test]
fn redis_defaults() {
    let QueueUri::Redis(u) = ok("redis://cache/3/celery") else {
        panic!("not redis")
    };
    assert!(!u.tls);
    assert_eq!(u.port, 6379);
    assert_eq!(u.db, 3);
    assert_eq!(u.queue, "celery");
    assert_eq!(u.priority_steps, vec![0, 3, 6, 9]);
    assert_eq!(u.separator, "\x06\x16");
    assert_eq!(u.prefix, "");
    assert_eq!(u.username, None);
    assert_eq!(u.password, None);
}

#[test]
fn redis_options_and_credentials() {
    let QueueUri::Redis(u) = ok(
        "rediss://:s3cret@[::1]:6380/0/a%2Fb?priority_steps=0,1,2,3,4,5,6,7,8,9&sep=%3A&prefix=app%3A",
    ) else {
        panic!("not redis")
    };
    assert!(u.tls);
    assert_eq!(u.host, "::1");
    assert_eq!(u.port, 6380);
    assert_eq!(u.queue, "a/b");
    assert_eq!(u.priority_steps, (0..10).collect::<Vec<u32>>());
    assert_eq!(u.separator, ":");
    assert_eq!(u.prefix, "app:");
    assert_eq!(u.username, None);
    assert_eq!(u.password.as_deref(), Some("s3cret"));
    let QueueUri::Redis(acl) = ok("redis://worker:pw@h/1/q?priority_steps=0") else {
        panic!("not redis")
    };
    assert_eq!(acl.username.as_deref(), Some("worker"));
    assert_eq!(acl.priority_steps, vec![0]);
}

#[test]
fn redis_errors() {
    assert!(problem("redis://h/x/q").contains("bad db `x`"));
    assert!(problem("redis://h/-1/q").contains("bad db"));
    assert!(problem("redis://h/99999999999/q").contains("bad db"));
    assert!(problem("redis://h/0").contains("missing path segment"));
    assert!(problem("redis://h").contains("missing path segments"));
    assert!(problem("redis://h/0/").contains("queue segment is empty"));
    assert!(problem("redis://h/0/q/extra").contains("extra path"));
    assert!(problem("redis://h/0/q?priority_steps=0,a").contains("bad priority step `a`"));
    assert!(problem("redis://h/0/q?priority_steps=0,-3").contains("bad priority step"));
    assert!(problem("redis://h/0/q?priority_steps=").contains("bad priority step"));
    assert!(problem("redis://h/0/q?priority_steps=3,1").contains("strictly increasing"));
    assert!(problem("redis://h/0/q?priority_steps=0,0").contains("strictly increasing"));
    let many: Vec<String> = (0..300).map(|i| i.to_string()).collect();
    assert!(
        problem(&format!("redis://h/0/q?priority_steps={}", many.join(","))).contains("more than")
    );
    assert!(problem("redis://h/0/q?sep=").contains("`sep` must not be empty"));
    assert!(problem("redis://h/0/q?priority_step=0").contains("unknown query parameter"));
    assert!(problem("redis://h/0/q?sep=a&sep=b").contains("twice"));
    assert!(problem("redis://h/0/q#frag").contains("fragment"));
    assert!(problem("redis://h/0/%FF").contains("UTF-8"));
}

#[test]
fn beanstalk() {
    let QueueUri::Beanstalkd(u) = ok("beanstalk://queue.local/emails") else {
        panic!("not beanstalk")
    };
    assert_eq!(u.port, 11300);
    assert_eq!(u.tube, "emails");
    let QueueUri::Beanstalkd(u) = ok("beanstalk://10.0.0.1:11301/a%2Fb(1)") else {
        panic!("not beanstalk")
    };
    assert_eq!(u.port, 11301);
    assert_eq!(u.tube, "a/b(1)");
    assert!(problem("beanstalk://h").contains("missing path segment"));
    assert!(problem("beanstalk://h/-bad").contains("bad tube name"));
    assert!(problem("beanstalk://h/sp%20ace").contains("bad tube name"));
    assert!(problem("beanstalk://u:p@h/t").contains("no authentication"));
    assert!(problem("beanstalk://h/a/b").contains("extra path"));
    assert!(problem("beanstalk://h/t?x=1").contains("none are accepted"));
}

#[test]
fn http_json() {
    let QueueUri::Http(u) = ok("https+json://metrics.local:8443/queues/q?token=abc") else {
        panic!("not http")
    };
    assert_eq!(u.url, "https://metrics.local:8443/queues/q?token=abc");
    let QueueUri::Http(u) = ok("HTTP+JSON://h/m") else {
        panic!("not http")
    };
    assert_eq!(u.url, "http://h/m");
    assert!(problem("http+json://:80/m").contains("host"));
}

#[test]
fn unknown_or_missing_scheme_lists_supported() {
    let p = problem("kafka://broker/topic");
    assert!(p.contains("unknown scheme `kafka`"), "{p}");
    assert!(p.contains("amqp") && p.contains("redis") && p.contains("beanstalk"));
    assert!(problem("just-a-queue-name").contains("no scheme"));
    assert!(problem("").contains("empty"));
    assert!(problem("   ").contains("empty"));
    assert!(problem("redis://h/0/q\tx").contains("control characters"));
    assert!(problem("redis://h/0/\nq").contains("control characters"));
    assert!(problem("redis://h/0/q\u{0}").contains("control characters"));
    let long = format!("redis://h/0/{}", "q".repeat(5000));
    assert!(problem(&long).contains("at most"));
}

#[test]
fn kinds() {
    assert_eq!(ok("http://h/1/q").kind(), ProviderKind::Sqs);
    assert_eq!(ok("amqp://h/%2F/q").kind(), ProviderKind::Rabbitmq);
    assert_eq!(ok("redis://h/0/q").kind(), ProviderKind::Redis);
    assert_eq!(ok("beanstalk://h/t").kind(), ProviderKind::Beanstalkd);
    assert_eq!(ok("http+json://h/m").kind(), ProviderKind::Http);
}

#[test]
fn redacted_hides_secrets_and_round_trips() {
    let cases = [
        (
            "amqp://guest:topsecret@rabbit/%2F/q?management=http://rabbit:15672",
            "amqp://guest:***@rabbit:5672/%2F/q?management=http%3A%2F%2Frabbit%3A15672",
        ),
        (
            "redis://:topsecret@h/2/q?sep=%3A",
            "redis://:***@h:6379/2/q?sep=%3A",
        ),
        ("redis://h/2/q", "redis://h:6379/2/q"),
        (
            "https+json://u:topsecret@h/m?token=topsecret&queue=a",
            "https+json://u:***@h/m?token=***&queue=a",
        ),
        ("beanstalk://h/t", "beanstalk://h:11300/t"),
        (
            "http://localhost:4566/000000000000/q?region=us-east-1",
            "http://localhost:4566/000000000000/q?region=us-east-1",
        ),
    ];
    for (input, expected) in cases {
        let uri = ok(input);
        assert_eq!(uri.redacted(), expected, "{input}");
        assert_eq!(uri.to_string(), expected);
        assert!(!format!("{uri:?}").contains("topsecret"), "{input}");
        // Except for the redacted secrets, the canonical form parses back to the same queue.
        if !input.contains("topsecret") {
            assert_eq!(ok(expected), uri, "{input}");
        }
    }
}

#[test]
fn errors_never_show_secrets() {
    for bad in [
        "redis://user:topsecret@h/x/q",
        "redis://user:top/secret@h:bad/0/q",
        "amqp://user:topsecret@rabbit:99999/%2F/q",
        "https+json://h/m?password=topsecret&x=%ZZ",
        "kafka://user:topsecret@h/t",
        "amqp://r/%2F/q?management=http://u:topsecret@m",
        "amqp://r/%2F/q?management=http%3A%2F%2Fu%3Atopsecret%40m",
    ] {
        let err = match QueueUri::parse(bad) {
            Ok(_) if bad.starts_with("https+json") => continue,
            Ok(u) => panic!("{bad} parsed as {u:?}"),
            Err(e) => e,
        };
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(!shown.contains("secret@"), "{shown}");
    }
}

// Found by the fuzz targets in fuzz/ (see fuzz/README.md).
#[test]
fn fuzz_findings_stay_fixed() {
    // A percent-encoded control character in an opaque host decoded to a host that
    // printed unencoded and could not be parsed back.
    let err = QueueUri::parse("redis://tsep=%06ubes:6379/0/celery").unwrap_err();
    assert!(err.to_string().contains("is not a host name"), "{err}");
    // Secrets behind a stray `?` or in a fragment were quoted in errors.
    for bad in [
        "https:////pa?sword=*?password=vvtvvvia&",
        "amqp://&?#vdv/?password=vvtvvvia&",
    ] {
        let shown = QueueUri::parse(bad).unwrap_err().to_string();
        assert!(!shown.contains("vvtvvvia"), "{shown}");
    }
    // `@` in an HTTP path was taken for userinfo when redacting, and the redacted form
    // no longer parsed.
    let uri = ok("https+json://user@r:6358/ret@%ed=4:?s79:6379/0/eu?token=abc");
    let shown = uri.redacted();
    assert_eq!(ok(&shown).kind(), ProviderKind::Http, "{shown}");
    assert!(!shown.contains("abc"), "{shown}");
    let uri = ok("https+json://u:hunter22@h/p@x?q=1");
    assert_eq!(uri.redacted(), "https+json://u:***@h/p@x?q=1");
    // Same for a RabbitMQ management URL with `@` in its path: it has no credentials
    // and must not look as if it had once redacted.
    let uri = ok("amqp://u:pw@rabbit:567/%2F/celery?management=http:/t:5672/%/rabbit:w@672");
    let (QueueUri::Rabbitmq(before), QueueUri::Rabbitmq(after)) = (&uri, &ok(&uri.redacted()))
    else {
        panic!("not RabbitMQ: {uri:?}");
    };
    assert_eq!(after.management, before.management);
    // HTTP fragments are never sent; a pasted `#password=...` is refused, not printed.
    let shown = QueueUri::parse("http+json://s/#?password=nxvnsvvm&/ww")
        .unwrap_err()
        .to_string();
    assert!(
        shown.contains("fragment") && !shown.contains("nxvnsvvm"),
        "{shown}"
    );
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(input in "\\PC{0,200}") {
        let _ = QueueUri::parse(&input);
    }

    #[test]
    fn parse_never_panics_on_scheme_like_input(
        scheme in "(redis|rediss|amqp|amqps|http|https|beanstalk|http\\+json)",
        rest in "[a-z0-9:@/%?&=,.\\[\\]#+-]{0,80}",
    ) {
        let input = format!("{scheme}://{rest}");
        if let Ok(uri) = QueueUri::parse(&input) {
            // What parses renders to something that parses to the same kind.
            let again = QueueUri::parse(&uri.redacted());
            if let Ok(again) = again {
                proptest::prop_assert_eq!(again.kind(), uri.kind());
            }
        }
    }

    #[test]
    fn password_never_in_error(pw in "[a-zA-Z0-9]{12,20}", tail in "[a-z0-9/?=&%:]{0,30}") {
        for scheme in ["redis", "amqp", "kafka", "beanstalk"] {
            let input = format!("{scheme}://user:{pw}@host{tail}");
            if let Err(e) = QueueUri::parse(&input) {
                proptest::prop_assert!(!e.to_string().contains(&pw), "{}", e);
            }
        }
    }
}
