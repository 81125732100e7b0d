-- Source server of the compose sandbox: edX's CSMH as a fresh install creates it (from shared/edx-schema.sql),
-- a few thousand realistic history rows, and the privileges csmh-sync needs there.
-- Run once by the mariadb image on an empty data directory (/docker-entrypoint-initdb.d), as root. The user
-- 'csmh'@'%' already exists: the image creates it from MARIADB_USER / MARIADB_PASSWORD_FILE.

CREATE DATABASE IF NOT EXISTS edxapp DEFAULT CHARACTER SET utf8;

CREATE TABLE IF NOT EXISTS edxapp.courseware_studentmodulehistory (
  `id` int(11) NOT NULL AUTO_INCREMENT,
  `version` varchar(255) DEFAULT NULL,
  `created` datetime(6) NOT NULL,
  `state` longtext,
  `grade` double DEFAULT NULL,
  `max_grade` double DEFAULT NULL,
  `student_module_id` int(11) NOT NULL,
  PRIMARY KEY (`id`),
  KEY `courseware_studentmo_student_module_id_6efc64cf_fk_coursewar` (`student_module_id`),
  KEY `courseware_studentmodulehistory_version_d3823ad1` (`version`),
  KEY `courseware_studentmodulehistory_created_19cb94d2` (`created`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8;

-- 100,000 history rows (ids 1..100000) shaped like CAPA problem attempts, so the backfill has work to do.
-- target.sql sets CSMHE's AUTO_INCREMENT from this count: keep the two in step.
INSERT INTO edxapp.courseware_studentmodulehistory (version, created, state, grade, max_grade, student_module_id)
SELECT NULL,
       TIMESTAMP('2024-01-01 00:00:00') + INTERVAL seq * 37 SECOND,
       IF(seq % 7 = 0, '{}',
          CONCAT('{"correct_map": {"block_', seq % 500, '_2_1": {"hint": "", "hintmode": null, "correctness": "',
                 IF(seq % 3 = 0, 'incorrect', 'correct'),
                 '", "msg": "", "npoints": null, "queuestate": null}}, "input_state": {"block_', seq % 500,
                 '_2_1": {}}, "last_submission_time": "2024-01-01T00:00:00Z", "attempts": ', 1 + seq % 4,
                 ', "seed": 1, "done": true, "student_answers": {"block_', seq % 500, '_2_1": ["choice_', seq % 4, '"]}}')),
       IF(seq % 7 = 0, NULL, IF(seq % 3 = 0, 0, 1)),
       IF(seq % 7 = 0, NULL, 1),
       1 + (seq * 7919) % 40000
FROM edxapp.seq_1_to_100000;   -- the Sequence engine: a virtual table of 1..100000

-- csmh-sync reads the binlog and the source table, nothing else; it never writes here (README.md, "Privileges").
-- REPLICATION SLAVE: the binlog dump. BINLOG MONITOR: SHOW BINARY LOGS and SHOW BINLOG EVENTS, for the purged
-- GTIDs. SELECT on CSMH alone: edxapp's other tables hold password hashes and OAuth tokens.
GRANT REPLICATION SLAVE ON *.* TO 'csmh'@'%';
GRANT BINLOG MONITOR ON *.* TO 'csmh'@'%';
GRANT SELECT ON edxapp.courseware_studentmodulehistory TO 'csmh'@'%';
